"""Rotation-equivariant normalisation of per-atom vector features (``layernorm_on_vec``).

TorchMD-NET's pre-training lineage (Coord, Frad, UniCorn) normalises the equivariant transformer's
output vectors by "whitening": for each atom, centre its ``D`` vector channels, form the 3 x 3
covariance ``C`` of the channels, and map ``v -> C^(-1/2) v``. Because ``C`` rotates as
``R C R^T``, ``C^(-1/2)`` rotates the same way and the result stays equivariant.

The published code regularises ``C`` with ``eps * diag(1, 2, 3)`` so that an SVD has distinct
singular values to differentiate through. That regulariser is fixed in the lab frame, so it
breaks equivariance; it is worst for planar and linear molecules, whose vector channels span
fewer than three directions. Here the regulariser is a multiple of the identity (equivariant)
and ``C^(-1/2)`` comes from a coupled Newton-Schulz iteration: only matrix products, so it is
differentiable to any order (forces and force losses), needs no eigen-decomposition, and has no
trouble with repeated eigenvalues. On the CPU, :class:`InverseSqrtSPD` gives the same values
and derivatives 4x faster: ``eigh`` for the values (whose *gradient* would be singular at
repeated eigenvalues, but is not used) and an analytic backward that is itself differentiable.

Conditioning: for planar or linear molecules some eigenvalues of ``C`` are ~0, so whitening
multiplies any out-of-plane (or off-axis) component, including round-off, by up to
``1 / sqrt(eps * tr(C) / 3)`` (~550 for ``eps = 1e-5``). Outputs stay accurate, but forces
through the whitened vectors are stiff there and float32 forces lose about three digits; this is
inherent to whitening (the published version behaves the same). Use ``layernorm_on_vec=None``
for force fine-tuning in float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

# With the relative regulariser below, every eigenvalue of the trace-normalised matrix is at
# least eps / 3 ~ 3e-6; the iteration multiplies a small eigenvalue's progress by ~2.25 per step
# and then converges quadratically, so 24 steps reach machine precision in float64.
_NEWTON_SCHULZ_STEPS = 24


def inverse_sqrt_spd(matrix: Tensor, steps: int = _NEWTON_SCHULZ_STEPS) -> Tensor:
    """Inverse square root of a batch of symmetric positive-definite matrices.

    Coupled Newton-Schulz iteration (Higham, *Functions of Matrices*, 2008, eq. 6.35) on the
    trace-normalised matrix, whose eigenvalues then lie in ``(0, 1]`` where it converges.

    Args:
        matrix: Shape ``(..., n, n)``, symmetric positive definite.
        steps: Number of iterations.

    Returns:
        ``matrix ** -0.5``, same shape and dtype.
    """
    trace = matrix.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    identity = torch.eye(matrix.size(-1), dtype=matrix.dtype, device=matrix.device)
    identity = identity.expand_as(matrix)
    y = matrix / trace
    z = identity
    for _ in range(steps):
        t = 0.5 * (3.0 * identity - z @ y)
        y = y @ t
        z = t @ z
    return z / trace.sqrt()


class InverseSqrtSPD(torch.autograd.Function):
    """``matrix ** -0.5`` of symmetric positive-definite ``(..., n, n)`` float64 matrices on
    the CPU, with an analytic backward; 4x faster than differentiating the Newton-Schulz
    iteration (5 ms instead of 22 for a small UniCorn batch's 1,070 atoms, forward and
    backward), and differentiable again (force training).

    Forward: ``U diag(lambda^-1/2) U^T`` from ``torch.linalg.eigh``, accurate also for repeated
    eigenvalues (only eigh's *gradient* is singular there, and it is not used); non-finite
    input goes through :func:`inverse_sqrt_spd` instead, which passes the NaN on rather than
    raising, so that a non-finite step is skipped as elsewhere.

    Backward: with ``S = Y^-1 = A^(1/2)``, ``dY = -Y dS Y`` and ``S dS + dS S = dA``, so the
    gradient is ``X`` solving ``S X + X S = -Y G Y`` (the Lyapunov operator is self-adjoint for
    symmetric ``S`` and invertible, ``s_i + s_j > 0``): one ``(n^2, n^2)`` solve per matrix,
    from differentiable operations on the output, so autograd can differentiate it again.
    The input must be symmetric (eigh reads its lower triangle); the gradient is the one of the
    inverse root as a function of the whole matrix, as the iteration's autograd gives it.
    """

    @staticmethod
    def forward(ctx: Any, matrix: Tensor) -> Tensor:
        if bool(torch.isfinite(matrix).all()):
            values, vectors = torch.linalg.eigh(matrix)
            out = (vectors * values.rsqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)
        else:
            out = inverse_sqrt_spd(matrix)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        n = out.size(-1)
        y, g = out.reshape(-1, n, n), grad.reshape(-1, n, n)
        root = torch.linalg.inv(y)
        eye = torch.eye(n, dtype=y.dtype, device=y.device)
        # Row-major vec: vec(S X) = (S kron I) vec(X), vec(X S) = (I kron S^T) vec(X).
        lyapunov = torch.einsum("bik,jl->bijkl", root, eye) + torch.einsum(
            "ik,bjl->bijkl", eye, root.transpose(-1, -2)
        )
        rhs = -(y @ g @ y)
        solved = torch.linalg.solve(lyapunov.reshape(-1, n * n, n * n), rhs.reshape(-1, n * n))
        return solved.reshape(grad.shape)


class EquivariantVectorWhitening(nn.Module):
    """Whiten each atom's vector channels: ``v -> w * C^(-1/2) (v - mean_c v)``.

    ``C = (v - mean) (v - mean)^T / D + eps * (tr(C0) / 3 + 1) * I`` where ``C0`` is the plain
    covariance. The regulariser is relative to the covariance scale (so the result does not
    depend on the overall size of ``v``) with an absolute floor (so all-zero vectors, e.g. an
    atom without neighbours, map to zero with finite gradients).

    Args:
        hidden_channels: Number of vector channels ``D``.
        eps: Regulariser strength.
        elementwise_linear: Learn a per-channel scale ``w`` (no bias, which would break
            equivariance).

    Shapes:
        input ``(N, 3, D)`` -> output ``(N, 3, D)``.
    """

    def __init__(
        self, hidden_channels: int, eps: float = 1e-5, elementwise_linear: bool = True
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.eps = eps
        self.weight: nn.Parameter | None = (
            nn.Parameter(torch.ones(hidden_channels)) if elementwise_linear else None
        )

    def reset_parameters(self) -> None:
        """Scale back to one."""
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, vec: Tensor) -> Tensor:
        if vec.dim() != 3 or vec.size(1) != 3 or vec.size(2) != self.hidden_channels:
            raise ValueError(
                f"expected vector features of shape (N, 3, {self.hidden_channels}), "
                f"got {tuple(vec.shape)}"
            )
        centred = vec - vec.mean(dim=-1, keepdim=True)
        # The smallest eigenvalues are ~eps times the largest: float32 round-off in C would be
        # a few percent of them, so C and its inverse root are formed in float64 (as the
        # published code does), except on MPS, which has no float64.
        work_dtype = torch.float32 if vec.device.type == "mps" else torch.float64
        wide = centred.to(work_dtype)
        cpu = vec.device.type == "cpu"
        # On the CPU, PyTorch runs these (N, 3, D) batched products as one small matrix
        # product per atom (a select and a copy each: 3-4x slower than broadcast sums).
        if cpu:
            rows = [(wide[:, i : i + 1] * wide).sum(-1) for i in range(3)]
            covariance = torch.stack(rows, dim=1) / self.hidden_channels
        else:
            covariance = wide @ wide.transpose(-1, -2) / self.hidden_channels
        scale = covariance.diagonal(dim1=-2, dim2=-1).sum(-1) / 3.0 + 1.0
        identity = torch.eye(3, dtype=work_dtype, device=vec.device)
        regularised = covariance + (self.eps * scale)[:, None, None] * identity
        if cpu:
            inverse_root = InverseSqrtSPD.apply(regularised).to(vec.dtype)
            out = (inverse_root.unsqueeze(-1) * centred.unsqueeze(1)).sum(2)
        else:  # autograd through the iteration and batched products, as measured on the H100
            out = inverse_sqrt_spd(regularised).to(vec.dtype) @ centred
        if self.weight is not None:
            out = out * self.weight
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.hidden_channels}, eps={self.eps}, elementwise_linear={self.weight is not None}"
        )


VECTOR_NORMS = ("whitened",)


def vector_norm(name: str | None, hidden_channels: int) -> nn.Module | None:
    """The output vector normalisation for ``layernorm_on_vec`` (``None`` or ``"whitened"``).

    Raises:
        ValueError: For any other name.
    """
    if name is None:
        return None
    if name == "whitened":
        return EquivariantVectorWhitening(hidden_channels)
    raise ValueError(f"unknown layernorm_on_vec {name!r}; choose None or one of {VECTOR_NORMS}")
