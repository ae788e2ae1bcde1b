"""Vector whitening: parity with an eigendecomposition, exact equivariance, degenerate input."""

from __future__ import annotations

import pytest
import torch

from molssl.encoders.vector_norm import (
    EquivariantVectorWhitening,
    InverseSqrtSPD,
    inverse_sqrt_spd,
    vector_norm,
)
from tests.encoders.molecules_3d import fixed_rotation, rotate_vectors


def eigh_inverse_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.rsqrt()) @ vectors.transpose(-1, -2)


def reference_whitening(vec: torch.Tensor, eps: float) -> torch.Tensor:
    centred = vec - vec.mean(dim=-1, keepdim=True)
    cov = centred @ centred.transpose(-1, -2) / vec.size(-1)
    scale = cov.diagonal(dim1=-2, dim2=-1).sum(-1) / 3 + 1
    cov = cov + eps * scale[:, None, None] * torch.eye(3, dtype=vec.dtype)
    return eigh_inverse_sqrt(cov) @ centred


def vectors_of_rank(rank: int, n: int = 5, channels: int = 16) -> torch.Tensor:
    """Features spanning ``rank`` spatial directions (3 = generic, 2 = planar, 1 = linear)."""
    generator = torch.Generator().manual_seed(rank)
    basis = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))[0]
    coefficients = torch.randn(n, rank, channels, generator=generator, dtype=torch.float64)
    return torch.einsum("ir,nrc->nic", basis[:, :rank], coefficients)


@pytest.mark.parametrize("spread", [[1.0, 0.5, 0.1], [1.0, 1.0, 1.0], [2.0, 3e-6, 3e-6]])
def test_inverse_sqrt_matches_eigendecomposition(spread: list[float]) -> None:
    q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)).double())[0]
    matrix = (q @ torch.diag(torch.tensor(spread, dtype=torch.float64)) @ q.T)[None]
    torch.testing.assert_close(
        inverse_sqrt_spd(matrix), eigh_inverse_sqrt(matrix), atol=1e-8, rtol=1e-8
    )


@pytest.mark.parametrize("rank", [3, 2, 1])
def test_whitening_matches_reference_and_is_equivariant(rank: int) -> None:
    norm = EquivariantVectorWhitening(16).double()
    vec = vectors_of_rank(rank)
    out = norm(vec)
    torch.testing.assert_close(out, reference_whitening(vec, norm.eps), atol=1e-7, rtol=1e-7)
    rotation = fixed_rotation()
    torch.testing.assert_close(
        norm(rotate_vectors(vec, rotation)), rotate_vectors(out, rotation), atol=1e-9, rtol=1e-9
    )


def test_whitened_channels_have_identity_covariance() -> None:
    out = EquivariantVectorWhitening(16).double()(vectors_of_rank(3))
    covariance = out @ out.transpose(-1, -2) / 16
    torch.testing.assert_close(covariance, torch.eye(3).double().expand(5, 3, 3), atol=1e-4, rtol=0)


def test_whitening_in_float32_is_accurate() -> None:
    vec = vectors_of_rank(2)
    norm = EquivariantVectorWhitening(16)
    torch.testing.assert_close(norm(vec.float()).double(), norm.double()(vec), atol=1e-4, rtol=1e-4)


def test_zero_and_degenerate_vectors_give_finite_higher_order_gradients() -> None:
    norm = EquivariantVectorWhitening(16).double()
    vec = torch.cat([torch.zeros(2, 3, 16, dtype=torch.float64), vectors_of_rank(1, n=2)])
    vec.requires_grad_(True)
    out = norm(vec)
    assert out[:2].abs().max() == 0
    (grad,) = torch.autograd.grad((out**2).sum(), vec, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), vec)
    assert torch.isfinite(grad).all() and torch.isfinite(second).all()


def spd_batch() -> torch.Tensor:
    """Regularised covariances of generic, planar, linear and zero vector channels: distinct,
    nearly zero and repeated eigenvalues."""
    vec = torch.cat([vectors_of_rank(3, n=2), vectors_of_rank(2, n=2), vectors_of_rank(1, n=2)])
    vec = torch.cat([vec, torch.zeros(1, 3, 16, dtype=torch.float64)])
    centred = vec - vec.mean(dim=-1, keepdim=True)
    cov = centred @ centred.transpose(-1, -2) / 16
    scale = cov.diagonal(dim1=-2, dim2=-1).sum(-1) / 3 + 1
    return cov + 1e-5 * scale[:, None, None] * torch.eye(3, dtype=torch.float64)


def test_analytic_inverse_sqrt_equals_the_iteration_and_its_gradient() -> None:
    """The CPU path (eigh forward, Lyapunov-solve backward) against autograd through the
    Newton-Schulz iteration: values and gradients for an arbitrary upstream gradient."""
    matrix = spd_batch()
    upstream = torch.randn(matrix.shape, generator=torch.Generator().manual_seed(1)).double()
    grads = []
    for function in (InverseSqrtSPD.apply, inverse_sqrt_spd):
        leaf = matrix.clone().requires_grad_(True)
        out = function(leaf)
        (grad,) = torch.autograd.grad((out * upstream).sum(), leaf)
        grads.append((out.detach(), grad))
    (out, grad), (out_ns, grad_ns) = grads
    torch.testing.assert_close(out, out_ns, rtol=1e-9, atol=1e-9 * float(out_ns.abs().max()))
    torch.testing.assert_close(grad, grad_ns, rtol=1e-7, atol=1e-7 * float(grad_ns.abs().max()))


def test_analytic_inverse_sqrt_passes_finite_difference_checks() -> None:
    """First and second derivatives against finite differences (force training differentiates
    the whitening twice)."""
    # Generic and planar channels, the planar one scaled so that its smallest eigenvalue
    # (~1e-5) is not swamped by the finite-difference step; the zero-vector case (1e-5 I) is
    # compared with the iteration's autograd above.
    # Inputs are symmetric by construction (covariances); eigh reads one triangle, so the
    # check perturbs both through a symmetrisation.
    matrix = torch.stack([spd_batch()[0], spd_batch()[2] * 1e3]).requires_grad_(True)

    def symmetric(matrix: torch.Tensor) -> torch.Tensor:
        return InverseSqrtSPD.apply((matrix + matrix.transpose(-1, -2)) / 2)

    assert torch.autograd.gradcheck(symmetric, (matrix,), eps=1e-7)
    assert torch.autograd.gradgradcheck(symmetric, (matrix,), eps=1e-7)


def test_analytic_inverse_sqrt_passes_nan_on() -> None:
    """A non-finite matrix gives NaN (the step is then skipped), not eigh's convergence error."""
    matrix = spd_batch()
    matrix[1, 0, 0] = float("nan")
    out = InverseSqrtSPD.apply(matrix)
    assert torch.isnan(out[1]).any() and torch.isfinite(out[0]).all()


def test_vector_norm_by_name() -> None:
    assert vector_norm(None, 8) is None
    assert isinstance(vector_norm("whitened", 8), EquivariantVectorWhitening)
    with pytest.raises(ValueError, match="layernorm_on_vec"):
        vector_norm("layer", 8)
    with pytest.raises(ValueError, match="shape"):
        EquivariantVectorWhitening(8)(torch.zeros(2, 3, 7))
