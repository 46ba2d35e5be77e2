"""Batched knockout conditions: several conditions of the fast engine in one batch (a speed setting:
the numbers agree with one condition at a time up to float rounding).

The fast engine (``videolens.knockout.engine.FastEngine``) recomputes, per condition, the rows
``q0:`` (from the first blocked query) of layers ``a..L-1`` (from the window's first layer). Run
one at a time, those passes are small: on a GPU they are launch-bound. Here conditions that share
``q0`` (the same recomputed rows) run as one batch, one row per condition, with **staggered
entry**: the batch walks the layers upwards, and a condition joins it at its own first layer
``a`` with the clean run's ``blocks.{a}.hook_resid_pre`` rows ``q0:``. So each condition computes
exactly the layers and rows it computes alone (no padding, no wasted layers), its own mask applies
in its own window only, and every row attends to the same frozen clean keys and values of the
positions before ``q0``. Results equal the one-by-one engine up to float rounding
(tests/test_knockout_engine.py, 1e-5 in fp32). Where a batch's new rows are at most as many as
the frozen positions (the groups whose first blocked query is late: the last position, the
options), the fast attention path packs the batch into one sequence over the past keys and values
held once instead of copying them into every row (``videolens.hooked.attention.PACK_SHARED_PAST``).

``batch_size="auto"`` chooses the batch from the memory free on the device
(``auto_batch_size``: on CUDA ``torch.cuda.mem_get_info``, on the CPU ``MemAvailable``), so a
user never has to guess it; an out-of-memory error (CUDA's, or the CPU allocator's refusal) halves
the batch and retries the same conditions (a warning says so) instead of failing, whether the size
was chosen or given.

Example::

    from videolens.knockout.batched import run_batched
    logits = run_batched(model, clean, [(hook, [0, 1, 2]), (hook, [3, 4, 5])], batch_size="auto")
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Bool, Float

from .._tl_compat import final_logits, frozen_kv_cache, scoped_hooks
from ..hooked import attention
from ..hooked.attention import ScoreMaskHook, max_packed_batch
from ..hooked.deepstack import feeding
from .hooks import KnockoutHook, hook_name

__all__ = ["RowMasks", "run_batched", "check_batch_conditions", "Condition", "AUTO", "auto_batch_size",
           "bytes_per_condition", "free_memory", "packs_batches"]

Condition = Tuple[KnockoutHook, Sequence[int]]
"""One knockout condition: the hook (its mask) and the layers where it applies."""


AUTO = "auto"
"""``batch_conditions`` / ``batch_size`` value: choose the batch from the free memory."""

CPU_MAX_BATCH = 4
"""Largest batch ``"auto"`` picks on the CPU for a group whose rows do not pack
(``packs_batches``): a CPU's matrix kernels are already busy with one condition's rows, so larger
batches gain nothing and only the memory grows (``benchmarks/knockout_sweep.py`` on 2 cores: batches
of 4 1.0-1.2x one by one, of 16 0.8-1.2x; the paper's sweep at 32 layers, width 128, after the
engine's host-time changes: batches of 4 1.58x one by one, and a cap of 4096 rows a batch, up to 64
conditions, no better: 1.49x). Groups that pack take up to the packing limit instead: the paper's
sweep at width 128, 10.5 s with every group capped at 4, 8.5 s so (one run, 2 cores)."""

MEMORY_SHARE = {"cuda": 0.8, "cpu": 0.25}
"""Share of the free memory ``"auto"`` lets one batch use (the CPU's is shared with the rest of
the machine, and an out-of-memory there kills the process instead of raising)."""


def check_batch_conditions(n) -> None:
    """Raises ValueError unless ``n`` (conditions per batch) is an integer >= 1 or ``"auto"``."""
    if n == AUTO:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"batch_conditions must be a positive number of conditions or 'auto', got {n!r}")


def free_memory(device: Union[str, torch.device]) -> int:
    """Bytes a new allocation can take on ``device``: on CUDA the driver's free memory plus what
    torch's caching allocator holds unused; on the CPU ``MemAvailable`` (Linux; 4 GiB elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def bytes_per_condition(cfg, n_rows: int, seq_len: int, per_head: bool) -> int:
    """A generous estimate of the memory one condition adds to a batch at its widest layer, in bytes:
    the recomputed rows' activations (residual, attention input and output, the MLP's hidden
    units), the keys and values of all ``seq_len`` positions (the frozen cache joined to the new
    rows), its boolean masks and one float32 score matrix per head (the SDPA math kernel's; the
    memory-efficient kernel needs less).

    Args:
        cfg: the model's ``HookedTransformerConfig``.
        n_rows: recomputed query rows (``seq_len - q0``).
        seq_len: positions of the sample.
        per_head: the masks differ per head (``heads=`` knockouts).
    """
    elt = torch.empty((), dtype=cfg.dtype).element_size()
    d_kv = (cfg.n_key_value_heads or cfg.n_heads) * cfg.d_head
    d_mlp = cfg.d_mlp or 4 * cfg.d_model
    rows = n_rows * (8 * cfg.d_model + 3 * d_mlp) * elt
    kv = 2 * 2 * seq_len * max(d_kv, cfg.n_heads * cfg.d_head) * elt
    masks = n_rows * seq_len * ((cfg.n_heads if per_head else 1) * 2 + 4 * cfg.n_heads)
    return int(1.5 * (rows + kv + masks))


def packs_batches(model) -> bool:
    """Whether the model's batched rows over a shared past attend as one packed sequence: the fast
    attention path is on in every layer and ``videolens.hooked.attention.PACK_SHARED_PAST`` is set."""
    return attention.PACK_SHARED_PAST and all(getattr(b.attn, "use_sdpa", False) for b in model.blocks)


def auto_batch_size(model, n_rows: int, seq_len: int, per_head: bool, device) -> int:
    """The batch ``"auto"`` runs: as many conditions as ``MEMORY_SHARE`` of the device's free memory
    holds (``free_memory`` / ``bytes_per_condition``), at least 1; on the CPU at most
    ``CPU_MAX_BATCH``, or, for a group that packs even at that size (``packs_batches``, and
    ``videolens.hooked.attention.max_packed_batch`` of its ``n_rows`` new rows over the
    ``seq_len - n_rows`` frozen positions at least ``CPU_MAX_BATCH``), at most that packing limit."""
    kind = torch.device(device).type
    budget = MEMORY_SHARE.get(kind, 0.25) * free_memory(device)
    n = max(1, int(budget // bytes_per_condition(model.cfg, n_rows, seq_len, per_head)))
    if kind == "cuda":
        return n
    limit = max_packed_batch(n_rows, seq_len - n_rows)
    if packs_batches(model) and limit >= CPU_MAX_BATCH:
        return min(n, limit)
    return min(n, CPU_MAX_BATCH)


class RowMasks(ScoreMaskHook):
    """One layer's knockout masks, one per batch row, for queries ``q0:`` of ``S`` positions.

    Args:
        masks: ``bool [batch, 1 or n_heads, S - q0, S]``, True = blocked (batch 1: one mask for every row).
        q0: the first recomputed query position.
    """

    no_empty_rows = True  # every row is a KnockoutHook's rows (checked there) or no edge at all

    def __init__(self, masks: Bool[torch.Tensor, "batch h_or_1 query key"], q0: int):
        self.masks, self.q0 = masks, q0

    def blocked(self, q_offset, n_query, n_key, n_heads, device):
        if q_offset != self.q0 or n_query != self.masks.shape[-2] or n_key != self.masks.shape[-1]:
            raise ValueError(f"batched knockout masks are for queries {self.q0}: of {self.masks.shape[-1]} "
                             f"positions; the forward has {n_query} queries from {q_offset} of {n_key} keys")
        return self.masks


def _rows(hook: KnockoutHook, q0: int, n_heads: int, device) -> Bool[torch.Tensor, "h query key"]:
    S = hook.seq_len
    return hook.blocked(q0, S - q0, S, n_heads, device)


@torch.no_grad()
def _run_group(model, clean, q0: int, conds: Sequence[Condition]) -> Float[torch.Tensor, "batch d_vocab"]:
    """Conditions sharing ``q0``, sorted by their first layer: last-position logits ``[batch, d_vocab]``."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    device = clean.logits.device
    starts = [min(layers) for _, layers in conds]
    windows = [frozenset(int(l) for l in layers) for _, layers in conds]
    rows = [_rows(hook, q0, H, device) for hook, _ in conds]
    per_head = any(r.shape[0] != 1 for r in rows)
    if per_head:
        rows = [r.expand(H, -1, -1) for r in rows]
    none = torch.zeros_like(rows[0])
    resid: Optional[torch.Tensor] = None
    for l in range(starts[0], L):
        n_new = sum(1 for a in starts if a == l)
        if n_new:
            new = clean.resid_pre[l][:, q0:].expand(n_new, -1, -1)
            resid = new.clone() if resid is None else torch.cat([resid, new])
        B = resid.shape[0]
        active = [l in windows[b] for b in range(B)]
        hooks = []
        if any(active):
            if all(active) and all(r is rows[0] for r in rows[:B]):  # one hook's mask in every row: broadcast
                masks = rows[0][None]  # [1, h, q, k], not B copies
            else:
                masks = torch.stack([rows[b] if active[b] else none for b in range(B)])
            hooks = [(hook_name(l), RowMasks(masks, q0))]
        keys = [clean.keys[l][:, :q0] if i == l else None for i in range(L)]
        values = [clean.values[l][:, :q0] if i == l else None for i in range(L)]
        kv = frozen_kv_cache(keys, values, q0, device, batch=B)
        with scoped_hooks(model, hooks), feeding(model, clean.inputs):
            resid = model(resid, start_at_layer=l, stop_at_layer=l + 1, past_kv_cache=kv)
    return final_logits(model, resid[:, -1:])[:, -1]


def _is_oom(exc: BaseException) -> bool:
    """CUDA's ``torch.OutOfMemoryError``, or the CPU allocator's refusal of an allocation."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def run_batched(model, clean, conditions: Sequence[Condition], batch_size: Union[int, str],
                on_done: Optional[Callable[[int], object]] = None) -> List[Float[torch.Tensor, "d_vocab"]]:
    """Last-position logits ``[d_vocab]`` of each condition, computed in batches of ``batch_size``
    (``"auto"``: chosen per group of conditions from the free memory, ``auto_batch_size``). A batch
    that runs out of memory is halved and retried (down to one condition, then the error
    is raised), and later batches keep the smaller size.

    Args:
        model: a ``HookedVideoLLM``.
        clean: the sample's ``CleanRun`` from ``FastEngine.clean``.
        conditions: ``(KnockoutHook, layers)`` pairs, in any order; the result follows it.
        batch_size: conditions per batch (>= 1, or ``"auto"``); conditions with different first
            blocked queries never share a batch.
        on_done: called with the number of conditions each batch finished (a progress bar's
            ``update``).

    Returns:
        One logits vector per condition, equal to ``FastEngine.run`` on it up to float rounding;
        a condition that blocks nothing gets the clean logits.

    Raises:
        ValueError: ``batch_size`` neither >= 1 nor ``"auto"``, or a ``clean`` run without the fast
            engine's cache.
        torch.OutOfMemoryError (or the CPU allocator's RuntimeError): one condition alone does not fit.
    """
    check_batch_conditions(batch_size)
    if clean.resid_pre is None:
        raise ValueError("batched knockout needs a CleanRun made by FastEngine.clean")
    out: List[Optional[torch.Tensor]] = [None] * len(conditions)
    groups: Dict[int, List[int]] = defaultdict(list)
    for i, (hook, layers) in enumerate(conditions):
        if hook.first_query is None or not len(layers):
            out[i] = clean.logits  # nothing blocked: the clean run, exactly
            if on_done is not None:
                on_done(1)
        else:
            groups[hook.first_query].append(i)
    device = clean.logits.device
    S = clean.resid_pre[0].shape[1]
    cap: Optional[int] = None  # the largest batch that fitted after an out-of-memory
    for q0, idx in groups.items():
        idx.sort(key=lambda i: min(conditions[i][1]))
        size = batch_size
        if size == AUTO:
            per_head = any(h.heads is not None for h, _ in (conditions[i] for i in idx))
            size = auto_batch_size(model, S - q0, S, per_head, device)
        if cap is not None:
            size = min(size, cap)
        s = 0
        while s < len(idx):
            chunk = idx[s:s + size]
            try:
                logits = _run_group(model, clean, q0, [conditions[i] for i in chunk])
            except RuntimeError as exc:
                if not _is_oom(exc) or len(chunk) == 1:
                    raise
                del exc
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                size = cap = max(1, len(chunk) // 2)
                warnings.warn(f"batched knockout: out of memory with {len(chunk)} conditions per batch; "
                              f"retrying with {size}", RuntimeWarning, stacklevel=2)
                continue
            for i, row in zip(chunk, logits):
                out[i] = row
            if on_done is not None:
                on_done(len(chunk))
            s += len(chunk)
    return out
