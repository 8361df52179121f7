"""MultiBranchStarModelHybrid: three CNN+Transformer branches, attention over candidates.

DESIGN section 1. All B x N candidates run through the shared extractor in one batch;
the output keeps the per-candidate attention weights (which period the model believes).

Period heads (``period_head``):
- ``candidate`` (the default of new runs): the primary period is the top-scored candidate's,
  refined by a bounded correction in log space (``tanh``, at most ``MAX_CORRECTION``
  relative); the candidate scores are trained to pick the true period.
- ``regress`` (the reference definition, kept for comparison): the primary period is
  regressed from the fused features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from starray.data.features import FOLD_STATS, LOGP_HI, LOGP_LO
from starray.data.synth import N_CLASSES

PERIOD_HEADS = ("candidate", "regress")
MAX_SLOTS = 16  # candidate slots with their own learned embedding (cand_context)
MAX_CORRECTION = 0.03  # the candidate head moves the chosen period by at most 3%
# ... in the model's normalized log10 period units
CORRECTION_BOUND = float(math.log10(1 + MAX_CORRECTION) / (LOGP_HI - LOGP_LO))


class Extractor(nn.Module):
    """Conv-BN-ReLU x2, 1x1 conv to d_model, TransformerEncoder, mean pool, Linear."""

    def __init__(self, in_ch: int, hidden: int, d_model: int, n_heads: int, n_layers: int,
                 dropout: float, emb_dim: int, stem_stride: int = 1) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv1d(in_ch, hidden, 5, stride=stem_stride, padding=2),
            nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Conv1d(hidden, hidden, 5, padding=2),
            nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Conv1d(hidden, d_model, 1),
        )
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.proj = nn.Linear(d_model, emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, L) -> (B, emb_dim)."""
        h = self.cnn(x).transpose(1, 2)  # (B, L', d_model)
        h = self.encoder(h)
        return self.proj(h.mean(dim=1))


class MultiBranchStarModelHybrid(nn.Module):
    """Light curve + periodogram + folded candidates -> class logits and two periods."""

    def __init__(self, emb_dim: int, merged_dim: int, cnn_hidden: int, d_model: int,
                 n_heads: int, n_layers: int, dropout: float, stem_stride: int = 1,
                 n_classes: int = N_CLASSES, period_head: str = "regress",
                 cand_context: bool = False, fold_stats: int = 0) -> None:
        super().__init__()
        if period_head not in PERIOD_HEADS:
            raise ValueError(f"period_head: {period_head!r} is not one of "
                             f"{', '.join(PERIOD_HEADS)}")
        self.period_head = period_head
        args = (cnn_hidden, d_model, n_heads, n_layers, dropout, emb_dim, stem_stride)
        self.lc_branch = Extractor(1, *args)
        self.pgram_branch = Extractor(1, *args)
        # a candidate's input channels: its fold, its log period and the first fold_stats of
        # the fold's statistics (FOLD_STATS: phase dispersion, half-phase correlation),
        # each scalar spread over the 200 phase bins
        if not 0 <= fold_stats <= len(FOLD_STATS):
            raise ValueError(f"fold_stats: {fold_stats} is not in 0..{len(FOLD_STATS)}")
        self.fold_stats = fold_stats
        self.cand_branch = Extractor(2 + fold_stats, *args)
        self.cand_score = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.Tanh(),
                                        nn.Linear(emb_dim, 1))
        # cand_context: candidates see each other and the two global branches before they are
        # scored (a beater's primary is the shorter of its two peaks; an eclipsing binary's is
        # twice the strongest): one attention layer over [lc, pgram, cand_1..N] tokens
        self.cand_context = None
        if cand_context:
            heads = next(h for h in (4, 2, 1) if emb_dim % h == 0)
            self.cand_context = nn.TransformerEncoderLayer(emb_dim, heads, 2 * emb_dim, dropout,
                                                           batch_first=True)
            # which slot a candidate fills: 0 = the strongest peak, ..., then the added ones
            self.cand_slot = nn.Embedding(MAX_SLOTS, emb_dim)
        self.fusion = nn.Sequential(
            nn.Linear(3 * emb_dim, merged_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(merged_dim, merged_dim), nn.ReLU(), nn.Dropout(dropout),
        )
        self.class_head = nn.Linear(merged_dim, n_classes)
        self.p1_head = nn.Linear(merged_dim, 1)
        self.p2_head = nn.Linear(merged_dim, 1)

    def forward(self, lc: torch.Tensor, pgram: torch.Tensor, folded: torch.Tensor,
                cand_logp: torch.Tensor, cand_stats: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """lc (B,1,1024), pgram (B,1,512), folded (B,N,200), cand_logp (B,N), cand_stats
        (B,N,2) (the folds' FOLD_STATS; needed with ``fold_stats`` > 0, else ignored).

        Returns ``logits`` (B, classes); ``p1`` and ``p2`` (B,), normalized log10 periods;
        ``cand_logits`` and ``cand_weights`` (B, N), the candidate scores and their softmax;
        ``chosen`` (B,), the index of the top-scored candidate; ``p1_correction`` (B,), the
        candidate head's correction of the chosen candidate (candidate head only).
        """
        b, n, length = folded.shape
        channels = [folded, cand_logp[..., None].expand(b, n, length)]
        if self.fold_stats:
            if cand_stats is None:
                raise ValueError(f"cand_stats: this model was built with fold_stats="
                                 f"{self.fold_stats} and needs the folds' statistics (batch "
                                 "key cand_stats)")
            stats = cand_stats[..., :self.fold_stats].to(folded.dtype)
            channels += [stats[..., k, None].expand(b, n, length) for k in range(self.fold_stats)]
        cand_in = torch.stack(channels, dim=2)
        cand_emb = self.cand_branch(cand_in.reshape(b * n, len(channels), length)
                                    ).reshape(b, n, -1)
        lc_emb, pg_emb = self.lc_branch(lc), self.pgram_branch(pgram)  # (B, emb)
        if self.cand_context is not None:
            slots = self.cand_slot(torch.arange(n, device=cand_emb.device).clamp(max=MAX_SLOTS - 1))
            tokens = torch.cat([lc_emb[:, None], pg_emb[:, None], cand_emb + slots], dim=1)
            cand_emb = self.cand_context(tokens)[:, 2:]  # (B, N, emb)
        cand_logits = self.cand_score(cand_emb).squeeze(-1)  # (B, N)
        weights = torch.softmax(cand_logits.float(), dim=1).to(cand_emb.dtype)
        pooled = (weights[..., None] * cand_emb).sum(dim=1)
        merged = self.fusion(torch.cat([lc_emb, pg_emb, pooled], 1))
        chosen = cand_logits.argmax(dim=1)  # (B,)
        raw = self.p1_head(merged).squeeze(-1).float()
        out = {
            "logits": self.class_head(merged),
            "p1": raw,
            "chosen": chosen,
            "p2": self.p2_head(merged).squeeze(-1),
            "cand_logits": cand_logits,
            "cand_weights": weights,
        }
        if self.period_head == "candidate":
            correction = CORRECTION_BOUND * torch.tanh(raw)
            base = cand_logp.float().gather(1, chosen[:, None]).squeeze(1)
            out["p1"] = base + correction
            out["p1_correction"] = correction
        return out


def build_model(dims: dict[str, Any]) -> MultiBranchStarModelHybrid:
    """Model from resolved dimensions (see ``starray.config.resolved_model``)."""
    return MultiBranchStarModelHybrid(**dims)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
