"""Checkpoints by name or by Hugging Face hub id.

- ``MODELS``: the known checkpoints as data (``videolens/assets/models.json``): the paper's four
  models and their bases, and the peer families' common checkpoints, each with its hub id and the
  settings the paper's scripts use (pooling shape, frames, prompt template, token budget) and its
  pathway spec. ``from_pretrained("llava-next-7b-video-ft")`` applies them; explicit arguments win.
- ``resolve_checkpoint``: a local folder for what the user typed. A local folder wins; then the
  bundled ``tiny-videollm``; then a known name or an ``org/name`` hub id, fetched with
  huggingface_hub's ``snapshot_download`` into its cache (``HF_HOME`` / ``cache_dir``, ``revision``,
  ``token`` / ``HF_TOKEN``, ``local_files_only`` / ``HF_HUB_OFFLINE=1``, its progress bars). Only
  the files a family needs are fetched (``ALLOW_PATTERNS``: configs, tokenizer, safetensors), never
  remote code and never pickles.

Example::

    model = vl.HookedVideoLLM.from_pretrained("llava-next-7b-video-ft")    # byminji/LLaVA-NeXT-7B-Video-FT, 8-12-12
    model = vl.HookedVideoLLM.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct", revision="main")
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import VideolensError

__all__ = ["MODELS", "KnownModel", "HubError", "ALLOW_PATTERNS", "known_model", "resolve_checkpoint",
           "download_checkpoint", "snapshot", "is_hub_id", "cached_snapshot"]

ALLOW_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json", "tokenizer.model",
                  "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                  "*preprocessor_config.json", "generation_config.json", "chat_template.json*"]
"""What a checkpoint download fetches: never ``*.py`` (remote code) nor ``*.bin`` / ``*.pt`` pickles."""


class HubError(VideolensError, ValueError):
    """A hub id that cannot be resolved (not found, gated, revision unknown, offline and not cached,
    pickles only); the message is one line naming the repository and what to do."""


@dataclass(frozen=True)
class KnownModel:
    """One row of the known-checkpoints table (``MODELS``)."""

    name: str
    hub_id: str
    role: str
    options: Dict[str, Any] = field(default_factory=dict)
    num_frames: Optional[int] = None
    template: Optional[str] = None
    pathway_spec: Optional[str] = None
    base: Optional[str] = None
    source: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    def settings(self) -> Dict[str, Any]:
        """The ``from_pretrained`` settings this checkpoint is run with: its family's options
        (``weights_conversion.options``) and ``num_frames`` (None values left out)."""
        out = {**self.options, "num_frames": self.num_frames}
        return {k: v for k, v in out.items() if v is not None}


def _load_table() -> Dict[str, KnownModel]:
    raw = json.loads((Path(__file__).resolve().parents[1] / "assets" / "models.json").read_text())
    names = {f.name for f in KnownModel.__dataclass_fields__.values()}
    out = {}
    for name, row in raw.items():
        kw = {k: v for k, v in row.items() if k in names}
        out[name] = KnownModel(name=name, extra={k: v for k, v in row.items() if k not in names}, **kw)
    return out


MODELS: Dict[str, KnownModel] = _load_table()


def known_model(name: Union[str, Path]) -> Optional[KnownModel]:
    """The table's row for a short name (``"llava-next-7b-video-ft"``), a hub id
    (``"byminji/LLaVA-NeXT-7B-Video-FT"``) or a hub repository's name (``"llava-v1.6-vicuna-7b-hf"``),
    case-insensitive; None for anything else."""
    text = str(name).strip().lower()
    for m in MODELS.values():
        if text in (m.name.lower(), m.hub_id.lower(), m.hub_id.split("/")[1].lower()):
            return m
    return None


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_hub_id(text: Union[str, Path]) -> bool:
    """Whether ``text`` reads as ``org/name`` (one slash, no path syntax)."""
    return isinstance(text, str) and bool(_HUB_ID.match(text)) and not text.startswith((".", "~"))


def cached_snapshot(repo_id: str, revision: Optional[str] = None, cache_dir: Optional[str] = None) -> Optional[Path]:
    """The local snapshot folder of ``repo_id`` in the hub cache, or None (no network is used)."""
    try:
        return snapshot(repo_id, ALLOW_PATTERNS, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except HubError:
        return None


def snapshot(repo_id: str, allow_patterns: List[str], repo_type: Optional[str] = None, revision: Optional[str] = None,
             cache_dir: Optional[str] = None, token: Optional[Union[str, bool]] = None,
             local_files_only: Optional[bool] = None, name: Optional[str] = None) -> Path:
    """``huggingface_hub.snapshot_download`` of the files matching ``allow_patterns``, with its
    errors turned into one line each (``name`` is what ``videolens download`` would fetch).

    Raises:
        HubError: repository not found, gated, revision not found, offline and not cached, the hub
            unreachable or answering an error.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf

    what = "dataset repository" if repo_type == "dataset" else "repository"

    def fail(message: str):
        raise HubError(f"{repo_id}{'@' + revision if revision else ''}: {message}") from None

    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, cache_dir=cache_dir, token=token,
                                      local_files_only=bool(local_files_only), allow_patterns=allow_patterns))
    except hf.GatedRepoError:
        fail(f"a gated {what}: accept its terms on the hub, then log in (`hf auth login`, or set HF_TOKEN)")
    except hf.RepositoryNotFoundError:
        fail(f"no such {what} on the hub (or a private one: log in with `hf auth login` or HF_TOKEN)")
    except hf.RevisionNotFoundError:
        fail(f"revision {revision!r} not found in the {what}")
    except hf.LocalEntryNotFoundError:
        fail("not in the local hub cache and downloads are off (HF_HUB_OFFLINE=1 or local_files_only); run "
             f"`videolens download {name or repo_id}` where there is a network")
    except hf.HfHubHTTPError as exc:
        fail(f"the hub answered {str(exc).strip().splitlines()[0]}")
    except Exception as exc:  # no route to the hub, DNS, a connection broken after huggingface_hub's own retries
        fail(f"cannot reach the hub ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
             "check the network, or run offline (HF_HUB_OFFLINE=1) from a filled cache")


def download_checkpoint(repo_id: str, revision: Optional[str] = None, cache_dir: Optional[str] = None,
                        token: Optional[Union[str, bool]] = None, local_files_only: Optional[bool] = None) -> Path:
    """The local snapshot of a hub checkpoint (``ALLOW_PATTERNS`` only), downloaded (or taken up
    again) into the hub cache when needed.

    Raises:
        HubError: as ``snapshot``, or a repository whose weights are pickles only (one line each).
    """
    folder = snapshot(repo_id, ALLOW_PATTERNS, revision=revision, cache_dir=cache_dir, token=token,
                      local_files_only=local_files_only)
    if not any(folder.glob("*.safetensors")):
        where = f"{repo_id}{'@' + revision if revision else ''}"
        pickles = _remote_pickles(repo_id, revision, token, local_files_only)
        if pickles:
            raise HubError(f"{where}: holds its weights only as pickles ({', '.join(pickles[:3])}); videolens never "
                           "unpickles files from the hub: use a safetensors copy (the hub's 'Convert to safetensors' "
                           "pull request, revision='refs/pr/N', or convert it locally)")
        raise HubError(f"{where}: the snapshot in {folder} holds no .safetensors weights")
    return folder


def _remote_pickles(repo_id, revision, token, local_files_only) -> List[str]:
    """The repository's ``.bin`` / ``.pt`` / ``.pth`` files, when the hub can be asked."""
    from huggingface_hub import HfApi
    from huggingface_hub import constants

    if local_files_only or constants.HF_HUB_OFFLINE:
        return []
    try:
        files = HfApi().list_repo_files(repo_id, revision=revision, token=token)
    except Exception:
        return []
    return [f for f in files if f.endswith((".bin", ".pt", ".pth"))]


def resolve_checkpoint(path: Union[str, Path], revision: Optional[str] = None, cache_dir: Optional[str] = None,
                       token: Optional[Union[str, bool]] = None, local_files_only: Optional[bool] = None) -> Path:
    """A local checkpoint folder for ``path``: the folder itself when it exists, the bundled model
    for ``"tiny-videollm"``, else a known name or hub id fetched with ``download_checkpoint``.

    Raises:
        FileNotFoundError: no such folder, and not a name or hub id.
        HubError: see ``download_checkpoint``.
    """
    from ..bundled import BUNDLED_NAME, bundled_model_path

    p = Path(path)
    if p.is_dir():
        return p
    if str(path) == BUNDLED_NAME:
        return bundled_model_path()
    known = known_model(path)
    text = str(path)
    if known is None and not is_hub_id(text):
        raise FileNotFoundError(f"checkpoint folder not found: {text} (nor a known name, see `videolens models`, "
                                f"nor a hub id org/name)")
    return download_checkpoint(known.hub_id if known else text, revision, cache_dir, token, local_files_only)
