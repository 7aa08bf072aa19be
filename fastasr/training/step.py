"""One training step (optim.accum_steps micro-batches) that never waits for the device, and the numbers it leaves
there until a sync point.

The step decides "non-finite, skip" on the device (the flag all-reduced across ranks) and the fused AdamW cancels
itself on that flag; the window's sums stay on the device and the ranks' clocks are agreed only when the training loop
reads them back, so every rank computes the same lr from the same numbers.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from fastasr.model.transducer import Transducer
from fastasr.training.config import OptimConfig

if TYPE_CHECKING:
    from fastasr.data import Batch

SAMPLE_RATE = 16000


def make_optimizer(model: torch.nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    """Fused AdamW: its `found_inf` input lets a device-side flag cancel a step without the host looking at it."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # biases and norms
    return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=(o.beta1, o.beta2),
                             fused=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimiser state, fused whatever wrote it.

    Older checkpoints come from a non-fused AdamW, and loading adopts the saved groups' flags: without `fused` the
    skip flag would be refused, and without it at load time the `step` counts would stay on the CPU.
    """
    groups = [dict(g, fused=True, foreach=None) for g in state["param_groups"]]
    optimizer.load_state_dict({**state, "param_groups": groups})


class EMA:
    """An exponential moving average of the model's parameters (its buffers copied), kept on the device and updated
    after every optimiser step that was not skipped, without the host reading anything back.

    The n-th kept update (n = 0, 1, …) uses decay min(ema_decay, (1 + n) / (10 + n)), TensorFlow's
    ExponentialMovingAverage warm-up (num_updates): the average starts at the weights and lengthens as they settle,
    instead of carrying the random initialisation for thousands of steps (0.9999 ** 5400 = 58 % of it).
    A skipped step (the device flag that cancels the fused AdamW step) gets weight 0: the lerp leaves the average
    bit for bit as it was, the buffers are not copied and n does not advance.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        assert 0 < decay < 1, f"ema decay {decay} is not in (0, 1)"
        self.model, self.decay = model, decay
        params = dict(model.named_parameters())
        state = model.state_dict()
        self.averaged = [k for k, v in state.items() if k in params and v.is_floating_point()]
        self.copied = [k for k in state if k not in params]  # buffers (BatchNorm statistics and alike)
        self.shadow = {k: v.detach().clone() for k, v in state.items()}
        self._live = [params[k] for k in self.averaged]  # the parameters themselves: the optimiser updates in place
        self._avg = [self.shadow[k] for k in self.averaged]
        dtypes = {p.dtype for p in self._live}
        assert len(dtypes) == 1, f"parameters of several dtypes {dtypes}"
        self.dtype = dtypes.pop()
        # Kept updates, counted on the device like the flag they follow.
        self.updates = torch.zeros((), dtype=torch.float64, device=self._live[0].device)

    def update(self, skip: torch.Tensor) -> None:
        kept = 1.0 - skip.to(torch.float64)  # 0-dim, on the device
        decay = torch.clamp((1.0 + self.updates) / (10.0 + self.updates), max=self.decay)
        weight = ((1.0 - decay) * kept).to(self.dtype)  # exactly 0 on a skipped step
        # The weight as a list of the one device tensor: _foreach_lerp_ has no single-tensor weight overload, and a
        # 0-dim tensor passed alone would be taken as its Scalar overload, a read-back that waits for the device.
        torch._foreach_lerp_(self._avg, self._live, [weight] * len(self._avg))
        if self.copied:
            live = self.model.state_dict()
            for k in self.copied:
                self.shadow[k].copy_(torch.where(skip > 0, self.shadow[k], live[k]))
        self.updates += kept

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average in the model's state-dict layout: what `load_state_dict` of a Transducer takes."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        assert state.keys() == self.shadow.keys(), f"EMA keys differ: {sorted(state.keys() ^ self.shadow.keys())}"
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.updates.fill_(updates)

    def updates_done(self) -> int:
        """How many updates the average holds; reads the device (a sync point: checkpoints only)."""
        return int(self.updates)


@dataclass(frozen=True)
class StepParts:
    """What a training step touches, built once per run."""

    net: torch.nn.Module  # the model, or its DDP wrapper
    model: Transducer
    optimizer: torch.optim.Optimizer
    frontend: torch.nn.Module
    augment: torch.nn.Module
    amp: object  # bf16 autocast, or a null context
    grad_clip: float
    world: int
    device: torch.device
    ema: EMA | None = None  # train.ema_decay > 0: updated after the optimiser step, cancelled by the same flag
    delay_penalty: float = 0.0  # train.delay_penalty: the training loss's, never validation's


def train_step(p: StepParts, batches: list[Batch], lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step over the CPU `batches` (optim.accum_steps of them) that never waits for the device:
    (loss, grad_norm, skip) as 0-dim tensors.

    The step equals one batch holding all of them: each micro-batch's mean loss is weighted by its share of the
    step's utterances (counted on the host), so the accumulated gradient is the whole step's mean-loss gradient.
    Under DDP the gradients are all-reduced once, in the last micro-batch's backward (`no_sync` on the others).
    The loss gets its lengths from the CPU batch (`host_lengths`), so it copies nothing back either.

    skip is 1.0 when any micro-batch's loss, or the step's gradient norm, is non-finite on any rank. The fused AdamW
    reads it as GradScaler's `found_inf` and then leaves weights, moments and step counts untouched on every rank.
    """
    total = sum(len(b) for b in batches)
    loss = torch.zeros((), dtype=torch.float32, device=p.device)
    for i, cpu in enumerate(batches):
        batch = cpu.to(p.device, non_blocking=True)
        with torch.no_grad():
            feats, feat_lens = p.frontend(batch.audio, batch.audio_lens)
            feats = p.augment(feats, feat_lens, getattr(p.model.encoder, "feat_mean", None))
        host_lengths = (p.model.encoded_lengths(p.frontend.output_lengths(cpu.audio_lens)), cpu.token_lens)
        sync = i == len(batches) - 1 or p.world == 1
        with (nullcontext() if sync else p.net.no_sync()), p.amp:
            part = p.net(feats, feat_lens, batch.tokens, batch.token_lens, host_lengths=host_lengths,
                         delay_penalty=p.delay_penalty)
            part = part * (len(cpu) / total)
        part.backward()
        loss = loss + part.detach().float()  # a non-finite micro-batch leaves the step's loss non-finite
    grad_norm = torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.grad_clip)
    skip = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()  # float32: what found_inf must be
    if p.world > 1:
        dist.all_reduce(skip, op=dist.ReduceOp.MAX)  # queued on the device like the gradients' all-reduce
    for group in p.optimizer.param_groups:
        group["lr"] = lr
    p.optimizer.grad_scale, p.optimizer.found_inf = None, skip
    p.optimizer.step()
    if p.ema is not None:
        p.ema.update(skip)
    p.optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, skip


@dataclass(frozen=True)
class Reading:
    """One sync point's numbers. loss and grad_norm average the window's finite steps over all ranks (None when every
    step was skipped); elapsed is the slowest rank's and s_per_step the main rank's, the same values on every rank."""

    loss: float | None
    grad_norm: float | None
    skipped: int
    elapsed: float
    s_per_step: float
    steps: int
    step_s: float  # this rank's window: wall-clock seconds less the data wait
    data_s: float
    audio_s: float
    signal: int = 0  # the largest signal number any rank was interrupted by (fastasr.training.interrupt), 0: none


class Window:
    """The steps since the last sync point, each number kept where it arises: loss and gradient-norm sums over finite
    steps and the finite / skipped counts on the device, data wait and audio seconds on the host."""

    def __init__(self, device: torch.device, world: int):
        self.device, self.world = device, world
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, grad norm, finite steps, skipped steps
        self.restart()

    def restart(self) -> None:
        self.sums.zero_()
        self.start, self.steps, self.data_s = time.perf_counter(), 0, 0.0
        self.audio_samples = torch.zeros((), dtype=torch.int64)

    def add(self, loss, grad_norm, skip, cpu_audio_lens: list[torch.Tensor], data_s: float) -> None:
        kept = torch.stack([loss.float(), grad_norm.float()]).where(skip == 0, 0.0)  # NaN * 0 would stay NaN
        self.sums += torch.cat([kept, 1.0 - skip[None], skip[None]])
        # The CPU batch's lengths, summed on the host: reading the device copy would wait for the device.
        self.audio_samples += sum(lens.sum() for lens in cpu_audio_lens)
        self.steps += 1
        self.data_s += data_s

    def read(self, start: float, signal: int = 0) -> Reading:
        """A sync point: one read-back of this rank's sums, then (world > 1) one gather of all ranks' sums, clocks
        and the signals they were interrupted by (`signal`: this rank's, 0 for none)."""
        mine = self.sums.tolist()  # waits for this rank's device, so the clock below reads when the work finished
        now = time.perf_counter()
        rows = [[*mine, now - start, now - self.start, float(signal)]]
        if self.world > 1:
            out = torch.empty(self.world, len(rows[0]), dtype=torch.float64, device=self.device)
            dist.all_gather(list(out.unbind()), torch.tensor(rows[0], dtype=torch.float64, device=self.device))
            rows = out.tolist()
        finite, skipped = int(mine[2]), int(mine[3])  # the same on every rank: the skip flag is agreed
        n = finite * self.world
        return Reading(loss=sum(r[0] for r in rows) / n if n else None,
                       grad_norm=sum(r[1] for r in rows) / n if n else None, skipped=skipped,
                       # The main rank's rate: the others' windows also hold their wait for its validation.
                       elapsed=max(r[4] for r in rows), s_per_step=rows[0][5] / max(1, self.steps),
                       steps=self.steps, step_s=now - self.start - self.data_s, data_s=self.data_s,
                       audio_s=int(self.audio_samples) / SAMPLE_RATE, signal=int(max(r[6] for r in rows)))


class Clock:
    """Training seconds that every rank agrees on without a per-step read-back, so all ranks compute the same lr.

    Exact at sync points (the slowest rank's clock); in between, extrapolated from the last agreed value by the agreed
    seconds per step of the last window. That rate leaves out validation and checkpoint time, so the estimate tends
    to run a little behind and catch up at the next sync rather than run ahead and step the lr back.
    """

    def __init__(self, step: int, elapsed: float):
        self.step, self.elapsed, self.s_per_step = step, elapsed, 0.0

    def agree(self, step: int, reading: Reading) -> None:
        self.step, self.elapsed, self.s_per_step = step, reading.elapsed, reading.s_per_step

    def at(self, step: int) -> float:
        return self.elapsed + (step - self.step) * self.s_per_step
