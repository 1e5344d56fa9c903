"""Disagreeing gradients: the input gradient exists but does not describe the loss at the
attack's scale. Along random directions d (uniform in [-1, 1] per pixel), the directional derivative g . (x+ - x-) / 2
(g: the input gradient of the margin max_{i != y} logit_i - logit_y) is compared with the central
secant (m(x+) - m(x-)) / 2, x+- = clip(x +- h d), h = `scale` x eps; central, so the loss's
curvature cancels. Over the directions, a cosine below `min_cosine` fires: the gradient is noise
(a shattered transform, Athalye et al. 2018 sec. 4.1), points against the trend (a discontinuous
activation), or is blind to jumps the attack must cross (k-WTA). The same test on each module's
own input and output names the modules that disagree.

Fix, needing no knowledge of the defense: PGD on the gradient smoothed at the attack's scale (the
expectation over Gaussian perturbations of `smoothing` x eps), BPDA across the modules that
disagree (the identity's gradient; Athalye et al. sec. 4.1.1), and a transfer attack from the
smooth surrogate (those modules replaced by the identity). Re-check: no repaired crafter's
gradient agrees with the model's secants."""

from __future__ import annotations

import torch
from torch import nn

from blf.eval.attacks.bpda import replaced, with_straight_through
from blf.eval.attacks.margin import cw_margin
from blf.eval.signals.base import Attempt, Fix, Signal
from blf.nn.models import frozen


def directions(x: torch.Tensor, count: int, seed: int) -> list[torch.Tensor]:
    """Uniform in [-1, 1] per pixel. Not random signs: with every coordinate at +-h, the secant of an
    oscillation sin(w x) is a cos(w x) sin(w h) d, the same pattern as its derivative a w cos(w x) d,
    and a shattered gradient would agree with it; random magnitudes decorrelate the two."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(x.shape, generator=g) * 2 - 1).to(x.device, x.dtype) for _ in range(count)]


def cosine(dot: torch.Tensor, secants: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """The cosine of the secants with the linear predictions, per example: 1 where the function did
    not move (nothing to disagree with), -1 where it moved and the gradient saw nothing."""
    out = dot / (secants * linear).sqrt()
    out = torch.where(linear > 0, out, torch.full_like(out, -1.0))
    out = torch.where(secants > 0, out, torch.ones_like(out))
    return torch.nan_to_num(out, nan=-1.0).clamp(-1, 1)


def margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return cw_margin(model(x).float(), y).double()


def agreement(crafter: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float, count: int,
              seed: int) -> torch.Tensor:
    """Per example: the cosine, over `count` directions, of `crafter`'s directional derivatives of
    the margin with `model`'s central secants at scale h (the same model: is its gradient right?)."""
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(margin(crafter, xg, y).sum(), xg)
    dot, ss, pp = (torch.zeros(len(x), dtype=torch.float64, device=x.device) for _ in range(3))
    with torch.no_grad():
        for d in directions(x, count, seed):
            up, down = (x + h * d).clamp(0, 1), (x - h * d).clamp(0, 1)
            s = (margin(model, up, y) - margin(model, down, y)) / 2
            p = (g.double() * (up - down).double()).flatten(1).sum(1) / 2
            dot, ss, pp = dot + s * p, ss + s * s, pp + p * p
    return cosine(dot, ss, pp).cpu()


def module_agreement(view: nn.Module, x: torch.Tensor, h: float, count: int, seed: int) -> dict[str, tuple[float, bool]]:
    """Per leaf module of `view` (names relative to it): the median over examples of the cosine of
    its own secants with its Jacobian-vector products, on the inputs it receives at x +- h d, and
    whether its output is shaped like its input (where BPDA's identity can stand in)."""
    leaves = [(name, m) for name, m in view.named_modules() if name and not list(m.children())]
    seen: dict[str, list] = {name: [] for name, _ in leaves}
    hooks = []
    for name, module in leaves:
        def keep(module, args, out, name=name):
            if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                seen[name].append((args[0].detach(), out.detach()))
        hooks.append(module.register_forward_hook(keep))
    found = {}
    try:
        with torch.no_grad():
            view(x)
            for d in directions(x, count, seed):
                view((x + h * d).clamp(0, 1))
                view((x - h * d).clamp(0, 1))
    finally:
        for hook in hooks:
            hook.remove()
    for name, module in leaves:
        calls = seen[name]
        if len(calls) != 1 + 2 * count:  # not called once per forward pass: its calls cannot be paired
            continue
        (u, out), rest = calls[0], calls[1:]
        dot, ss, pp = (torch.zeros(len(u), dtype=torch.float64) for _ in range(3))
        try:
            for (u_up, o_up), (u_down, o_down) in zip(rest[0::2], rest[1::2]):
                _, linear = torch.func.jvp(module, (u,), ((u_up - u_down) / 2,))
                s = ((o_up - o_down) / 2).flatten(1).double().cpu()
                p = linear.detach().flatten(1).double().cpu()
                dot, ss, pp = dot + (s * p).sum(1), ss + (s * s).sum(1), pp + (p * p).sum(1)
        except (RuntimeError, TypeError, NotImplementedError):  # a module torch.func cannot differentiate forward
            continue
        found[name] = (float(cosine(dot, ss, pp).median()), out.shape == u.shape)
    return found


class Smoothed(nn.Module):
    """The model's expectation over Gaussian input perturbations of standard deviation `sigma`:
    its gradient is the loss's gradient at the attack's scale, not at one point (each draw's
    gradient averaged: EOT over the smoothing noise)."""

    def __init__(self, model: nn.Module, sigma: float, draws: int):
        super().__init__()
        self.model, self.sigma, self.draws = model, sigma, draws

    def noisy(self, x):
        return (x + self.sigma * torch.randn_like(x)).clamp(0, 1)

    def forward(self, x):
        return torch.stack([self.model(self.noisy(x)) for _ in range(self.draws)]).mean(0)

    def prelogits_and_logits(self, x):
        pairs = [self.model.prelogits_and_logits(self.noisy(x)) for _ in range(self.draws)]
        return torch.stack([z for z, _ in pairs]).mean(0), torch.stack([v for _, v in pairs]).mean(0)


class DisagreeingGradients(Signal):
    name, title = "disagreeing_gradients", "disagreeing gradients"
    remedy = "smoothed gradients; BPDA across the modules that disagree; transfer from the smooth surrogate"

    def scale(self, at: Attempt) -> float:
        return self.cfg.scale * at.eps

    def measured(self, at: Attempt, crafter: nn.Module, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        p = at.procedure
        parts = [agreement(crafter, p.subject.view, xb, p.y[ib], self.scale(at), self.cfg.directions, p.seed)
                 for xb, ib in zip(x.split(p.batch_size), index.split(p.batch_size))]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)

    def detect(self, at: Attempt) -> torch.Tensor:
        p = at.procedure
        if p.subject.randomized:
            at.skipped.append("disagreeing gradients: not measured on a randomized model (its secants are noise)")
            return at.none()
        everyone = torch.arange(at.n)
        with frozen(p.subject.model):
            flagged = (self.measured(at, p.subject.crafter(), p.x, everyone) < self.cfg.min_cosine) | \
                      (self.measured(at, p.subject.crafter(), at.points, everyone) < self.cfg.min_cosine)
        return flagged & at.standing

    def modules(self, at: Attempt, index: torch.Tensor) -> list[str]:
        """The shape-keeping modules whose own gradients disagree, measured on (at most `probe` of)
        the examples `index`; once per eps."""
        if "disagreeing" not in at.found:
            p = at.procedure
            part = index[: self.cfg.probe]
            found = module_agreement(p.subject.view, p.x[part], self.scale(at), self.cfg.directions, p.seed) if len(part) else {}
            low = {name: shape for name, (cos, shape) in found.items() if cos < self.cfg.min_cosine}
            at.found["disagreeing"] = [name for name, shape in low.items() if shape]
            unbridged = [name for name, shape in low.items() if not shape]
            if unbridged:
                at.skipped.append(f"BPDA across {', '.join(unbridged)}: their gradients disagree, but their outputs are not "
                                  "shaped like their inputs (no identity can stand in)")
        return at.found["disagreeing"]

    def crafters(self, at: Attempt, index: torch.Tensor) -> list[tuple[str, nn.Module]]:
        """(name, model to craft on) of the repaired gradients."""
        p = at.procedure
        found = [("smoothed", Smoothed(p.subject.crafter(), self.cfg.smoothing * at.eps, p.budget.eot_draws))]
        names = self.modules(at, index)
        if names:
            bridged = with_straight_through(p.subject.view, sorted({*names, *(f"model.{n}" for n in p.subject.blockers)}))
            found.append(("bpda_" + "+".join(n.removeprefix("model.") for n in names), bridged))
        return found

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        p = at.procedure
        for name, crafter in self.crafters(at, index):
            p.attack(at, f"{name}_{p.reported.name}", p.pgd_like(p.reported), crafter, at.standing_among(index), fix)
        names = self.modules(at, index)
        part = at.standing_among(index)
        if names and len(part):  # transfer from the smooth surrogate: those modules gone, forward and backward
            surrogate = replaced(p.subject.view, names)
            points = p.attack(at, "transfer_smooth", p.pgd_like(p.reported), surrogate, part, fix)
            at.found.setdefault("surrogates", {})["transfer_smooth"] = (surrogate, part, points)

    def recheck(self, at: Attempt) -> int:
        p = at.procedure
        index = at.ledger.standing(at.flags[self.name])
        if not len(index):
            return 0
        with frozen(p.subject.model):
            still = torch.ones(len(index), dtype=torch.bool)
            for _, crafter in self.crafters(at, index):
                still &= self.measured(at, crafter, at.ledger.points[index], index) < self.cfg.min_cosine
        return int(still.sum())


__all__ = ["DisagreeingGradients", "agreement", "module_agreement", "Smoothed"]
