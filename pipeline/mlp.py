"""The one-hidden-layer model, fitted with torch's L-BFGS and autograd (imported only for ``--model mlp``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from genesig.artifact.manifest import TargetKind
from genesig.pipeline.model import breslow_risk_index

if TYPE_CHECKING:
    from genesig.pipeline.settings import TrainSettings


def cox_loss(eta: torch.Tensor, time: np.ndarray, event: np.ndarray) -> torch.Tensor:
    """Negative Cox log partial likelihood per event (Breslow ties)."""
    order, last = breslow_risk_index(time)
    eta_sorted = eta[torch.as_tensor(order)]
    log_risk = torch.logcumsumexp(eta_sorted, dim=0)[torch.as_tensor(last)]
    events = torch.as_tensor(event[order], dtype=torch.bool)
    return -(eta_sorted[events] - log_risk[events]).sum() / max(int(events.sum()), 1)


class _Network(torch.nn.Module):
    """One hidden layer; parameter names are the artifact's tensor names."""

    def __init__(self, n_genes: int, config: TrainSettings) -> None:
        super().__init__()
        self.config = config
        self.hidden = torch.nn.Linear(n_genes, config.hidden_units)
        self.output = torch.nn.Linear(config.hidden_units, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)
        h = torch.relu(h) if self.config.activation == "relu" else torch.tanh(h)
        return self.output(h).squeeze(1)

    def penalty(self) -> torch.Tensor:
        return sum((p**2).sum() for name, p in self.named_parameters() if name.endswith("weight"))  # type: ignore[return-value]


def train_mlp(
    z: np.ndarray, event: np.ndarray, time: np.ndarray | None, target: TargetKind, config: TrainSettings, l2: float
) -> dict[str, np.ndarray]:
    torch.manual_seed(config.seed)
    x = torch.as_tensor(z, dtype=torch.float64)
    y = torch.as_tensor(event, dtype=torch.float64)
    net = _Network(z.shape[1], config).double()
    optimizer = torch.optim.LBFGS(
        net.parameters(), lr=1.0, max_iter=config.max_iter, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        eta = net(x)
        if target == "binary":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(eta, y)
        else:
            assert time is not None
            loss = cox_loss(eta, time, event)
        loss = loss + l2 * net.penalty() / 2
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return {k: v.detach().numpy().astype(np.float64) for k, v in net.state_dict().items()}
