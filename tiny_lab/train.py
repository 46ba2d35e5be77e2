"""Losses, the vision pre-training stage, the training loop, checkpoint export."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from videolens import synthetic
from videolens.frontend.vision import FramePreprocessor
from .batches import Batcher, Item, alignment_targets
from .config import MODES, TrainConfig
from .model import TinyVideoLLM, build_model, build_tokenizer

def alignment_loss(model: "TinyVideoLLM", batcher: "Batcher", frames: np.ndarray) -> torch.Tensor:
    """Mean squared distance of each video token to its (detached) ``alignment_targets`` target,
    relative to the mean squared norm of the coloured regions' targets."""
    E = model.llama.model.embed_tokens.weight.detach()
    tgt, on = alignment_targets(E, batcher, frames)
    scale = tgt[on].pow(2).sum(-1).mean() if on.any() else torch.ones(())
    return (model.last_video - tgt).pow(2).sum(-1).mean() / scale


def batch_loss(model: TinyVideoLLM, batcher: Batcher, items: Sequence[Item]) -> torch.Tensor:
    tokens, vpos, frames, mask = batcher.collate(items)
    cfg = batcher.cfg
    layer = cfg.video_targets_layer if 0 < cfg.video_targets_layer < cfg.n_layers else 0
    hid = model.hidden(tokens, vpos, frames, mask, resid_after=layer)
    hid, mid = hid if layer else (hid, hid)
    penalty = torch.zeros(())
    if cfg.video_norm_max > 0:
        norms = model.last_video.norm(dim=-1)
        penalty = cfg.video_norm_weight * F.relu(norms - cfg.video_norm_max).pow(2).mean()
    rows, cols, hard, soft_rows, soft_sets, weight = [], [], [], [], [], []
    for i, it in enumerate(items):
        for pos, tgt in it.targets:
            weight.append(cfg.letter_weight if pos == it.letter_pos else 1.0)
            if isinstance(tgt, list):
                soft_rows.append(len(rows))
                soft_sets.append(tgt)
                hard.append(-100)
            else:
                hard.append(int(tgt))
            rows.append(i)
            cols.append(pos)
    logits = model.llama.lm_head(hid[torch.tensor(rows), torch.tensor(cols)])
    logp = logits.float().log_softmax(-1)
    hard_t = torch.tensor(hard)
    weight_t = torch.tensor(weight)
    n = float(weight_t.sum())
    loss = -(weight_t[hard_t >= 0] * logp[hard_t >= 0].gather(1, hard_t[hard_t >= 0][:, None])[:, 0]).sum()
    for r, ids in zip(soft_rows, soft_sets):
        loss = loss - weight[r] * logp[r, ids].mean()
    vt = [(i, pos, ids) for i, it in enumerate(items) for pos, ids in it.video_targets]
    if vt:  # the moving object's direction words, through the logit lens at the chosen layer
        at = mid[torch.tensor([i for i, _, _ in vt]), torch.tensor([p for _, p, _ in vt])]
        lp = model.llama.lm_head(model.llama.model.norm(at) if layer else at).float().log_softmax(-1)
        loss = loss - lp.gather(1, torch.tensor([ids for _, _, ids in vt])).mean(-1).sum()
        n += len(vt)
    if cfg.align_weight > 0:
        penalty = penalty + cfg.align_weight * alignment_loss(model, batcher, frames)
    return loss / n + penalty


def text_loss(model: TinyVideoLLM, batcher: Batcher, samples) -> torch.Tensor:
    """Mean cross-entropy of the text-only option-matching sequences (plain causal attention)."""
    seqs = [batcher.text_item(s) for s in samples]
    S = max(len(i) for i, _ in seqs)
    tokens = torch.full((len(seqs), S), int(batcher.tok.pad_token_id), dtype=torch.long)
    rows, cols, tgts = [], [], []
    for b, (ids, targets) in enumerate(seqs):
        tokens[b, : len(ids)] = torch.tensor(ids)
        for pos, t in targets:
            rows.append(b)
            cols.append(pos)
            tgts.append(t)
    hid = model.llama.model(input_ids=tokens).last_hidden_state
    logits = model.llama.lm_head(hid[torch.tensor(rows), torch.tensor(cols)]).float()
    return F.cross_entropy(logits, torch.tensor(tgts))


def pretrain_vision(model: TinyVideoLLM, batcher: Batcher, cfg: TrainConfig, out: Path) -> float:
    """Alignment stage (as LLaVA's stage 1): train the tower and projector alone so that every video
    token regresses to the word embedding of the colour its region shows (``alignment_loss``).
    Returns the final loss; logs to ``out/log.jsonl``."""
    rng = np.random.default_rng([cfg.seed, 11])
    params = list(model.tower.parameters()) + list(model.projector.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.98))
    tasks = list(synthetic.TASKS)
    loss = torch.zeros(())
    with open(out / "log.jsonl", "a") as log:
        for k in range(cfg.vision_pretrain):
            frames = np.stack([synthetic.sample_task(tasks[rng.integers(len(tasks))], rng).frames() for _ in range(cfg.batch_size)])
            model.last_video = model.video_embeds(frames)
            loss = alignment_loss(model, batcher, frames)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (k + 1) % 50 == 0:
                rec = {"vision_pretrain_step": k + 1, "align_loss": float(loss.detach())}
                log.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)
    return float(loss.detach())


# ---- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: TinyVideoLLM, batcher: Batcher, samples: Dict[str, List[synthetic.SyntheticSample]],
             modes: Sequence[str] = ("full", "knockout", "last"), bs: int = 32) -> Dict[str, Dict[str, float]]:
    """Accuracy (argmax over the option letters at the last position) per task and attention mode."""
    model.eval()
    out: Dict[str, Dict[str, float]] = {}
    for mode in modes:
        out[mode] = {}
        for task, ss in samples.items():
            correct = 0
            for k in range(0, len(ss), bs):
                items = [batcher.item(s, mode, aux=False, train=False) for s in ss[k:k + bs]]
                tokens, vpos, frames, mask = batcher.collate(items)
                hid = model.hidden(tokens, vpos, frames, mask)
                h = hid[torch.arange(len(items)), torch.tensor([it.letter_pos for it in items])]
                logits = model.llama.lm_head(h)
                for it, lg in zip(items, logits):
                    pred = it.option_ids[int(lg[it.option_ids].argmax())]
                    correct += int(pred == it.answer_id)
            out[mode][task] = correct / len(ss)
    model.train()
    return out


# ---- saving -----------------------------------------------------------------------------------
def export(model: TinyVideoLLM, tokenizer, cfg: TrainConfig, path: Path, dtype=torch.float16, extra: Optional[dict] = None) -> Path:
    """Write a PLLaVA-style checkpoint loadable by ``HookedVideoLLM.from_pretrained``."""
    from weights_conversion.writers import save_pllava_checkpoint

    ph = int(tokenizer.convert_tokens_to_ids("<image>"))
    return save_pllava_checkpoint(path, model.tower, model.projector, model.llama, tokenizer, cfg.pooling_shape, ph,
                                  num_frames=cfg.num_frames, dtype=dtype,
                                  extra_config={"prompt_template": "eval_mvbench_vicuna", **(extra or {})})


def _eval_set(cfg: TrainConfig) -> Dict[str, List[synthetic.SyntheticSample]]:
    # seeds far from the training stream (training uses an rng, not make_sample)
    return {t: synthetic.make_samples(t, cfg.eval_per_task, seed=9000 + cfg.seed) for t in synthetic.TASKS}


def sample_mode(cfg: TrainConfig, rng: np.random.Generator, step: int, task: str, aux: bool) -> str:
    """The attention mode of one training sample (``MODES``): drawn from ``mode_probs`` with the
    knockout share ramping in over ``[knockout_from, 2 * knockout_from]``; plain ``full`` before
    ``full_until``; open-ended (aux) samples never run under knockout (``full`` instead), nor do the
    tasks in ``no_knockout`` (``last`` instead: no uniform-letter target for them)."""
    probs = np.array(cfg.mode_probs, float)
    probs[2] *= min(1.0, max(0.0, (step - cfg.knockout_from) / max(1, cfg.knockout_from)))
    mode = MODES[rng.choice(3, p=probs / probs.sum())] if step >= cfg.full_until else "full"
    if aux and mode == "knockout":
        mode = "full"
    if mode == "knockout" and task in cfg.no_knockout:
        mode = "last"
    return mode


def lr_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig):
    """``step -> learning rate``: transformers' cosine schedule with linear warmup and a floor of
    0.1 x ``lr`` (``get_cosine_with_min_lr_schedule_with_warmup``), read per step so a resumed or
    ``stop_at``-ended phase keeps its place on it. (Before: the lab's own formula, which warmed up
    from ``lr / warmup`` at step 0 instead of 0: one step earlier, the same curve after.)"""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    factor = get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup, cfg.max_steps, min_lr_rate=0.1).lr_lambdas[0]
    return lambda step: cfg.lr * factor(min(step, cfg.max_steps))


@torch.enable_grad()
def train(cfg: TrainConfig, out: Path, resume: bool = False) -> Dict:
    """Train, evaluating and checkpointing every ``eval_every`` steps; returns the last evaluation."""
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    model = build_model(cfg, len(tok))
    batcher = Batcher(tok, cfg)
    # the fast pixel path must equal the loader's preprocessing
    probe = synthetic.make_sample("object_color", 0).frames()
    ref = FramePreprocessor(cfg.image_size)(probe)
    if not torch.equal(ref, model.pixels(probe)):
        raise RuntimeError("fast pixel normalisation differs from FramePreprocessor")

    step = 0
    state_path = out / "state.pt"
    if cfg.init_from:
        model.load_state_dict(torch.load(cfg.init_from, weights_only=False)["model"])
    st = torch.load(state_path, weights_only=False) if resume and state_path.exists() else None
    if st is not None:
        model.load_state_dict(st["model"])
        step = st["step"]
    if cfg.vision_pretrain and step == 0:
        pretrain_vision(model, batcher, cfg, out)
    if cfg.freeze_vision:
        for prm in list(model.tower.parameters()) + list(model.projector.parameters()):
            prm.requires_grad_(False)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    if st is not None:
        opt.load_state_dict(st["opt"])
    lr_at = lr_schedule(opt, cfg)
    rng = np.random.default_rng([cfg.seed, step, 7])
    names = [t for t, _ in cfg.task_weights]
    w = np.array([x for _, x in cfg.task_weights], float)
    w /= w.sum()
    evalset = _eval_set(cfg)
    log = open(out / "log.jsonl", "a")
    t0 = time.time()
    elapsed0 = 0.0 if st is None else st.get("elapsed", 0.0)
    last_eval: Dict = {}
    run_loss, n_loss = 0.0, 0
    starts = dict(cfg.task_start)
    model.train()
    while step < cfg.max_steps:
        items = []
        live = np.array([w[i] if step >= starts.get(t, 0) else 0.0 for i, t in enumerate(names)])
        live /= live.sum()
        for _ in range(cfg.batch_size):
            task = names[rng.choice(len(names), p=live)]
            s = synthetic.sample_task(task, rng)
            ramp = min(1.0, max(0.0, (step - cfg.aux_until) / max(1, cfg.aux_until)))
            aux = rng.random() < cfg.p_aux_start + (cfg.p_aux - cfg.p_aux_start) * ramp
            mode = sample_mode(cfg, rng, step, task, aux)
            items.append(batcher.item(s, mode, aux))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = batch_loss(model, batcher, items) if items else torch.zeros(())
            if cfg.text_batch:
                loss = loss + text_loss(model, batcher, [synthetic.sample_task(names[rng.choice(len(names), p=w)], rng)
                                                         for _ in range(cfg.text_batch)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
        step += 1
        run_loss += float(loss.detach())
        n_loss += 1
        elapsed = elapsed0 + time.time() - t0
        done = elapsed > cfg.minutes * 60 or step >= cfg.max_steps or (cfg.stop_at > 0 and step >= cfg.stop_at)
        if step % cfg.eval_every == 0 or done:
            last_eval = evaluate(model, batcher, evalset)
            rec = {"step": step, "elapsed_s": round(elapsed, 1), "loss": run_loss / max(1, n_loss),
                   "lr": lr_at(step), "eval": last_eval}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            run_loss, n_loss = 0.0, 0
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                        "config": asdict(cfg)}, state_path)
            export(model, tok, cfg, out / "export", extra={"train_step": step})
            if rng is not None:
                rng = np.random.default_rng([cfg.seed, step, 7])  # resumable stream
        if done:
            break
    log.close()
    return last_eval


