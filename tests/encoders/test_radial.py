"""Radial bases and cutoff envelopes against their closed forms written out in NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from molssl.encoders.radial import (
    CosineCutoff,
    ExpNormalSmearing,
    GaussianSmearing,
    cosine_cutoff,
    radial_basis,
)

DISTANCES = np.array([0.0, 0.3, 1.09, 1.54, 2.5, 4.2, 4.999, 5.0, 6.1])


def test_cosine_cutoff_closed_form() -> None:
    got = cosine_cutoff(torch.from_numpy(DISTANCES), 0.0, 5.0).numpy()
    expected = np.where(DISTANCES < 5.0, 0.5 * (np.cos(np.pi * DISTANCES / 5.0) + 1.0), 0.0)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[0] == 1.0 and got[-1] == 0.0 and got[-2] == 0.0


def test_cosine_cutoff_with_lower_bound_is_zero_outside_the_shell() -> None:
    got = CosineCutoff(1.0, 5.0)(torch.from_numpy(DISTANCES)).numpy()
    inside = (DISTANCES > 1.0) & (DISTANCES < 5.0)
    expected = 0.5 * (np.cos(np.pi * (2 * (DISTANCES - 1.0) / 4.0 + 1.0)) + 1.0) * inside
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(CosineCutoff(1.0, 5.0)(torch.tensor([3.0])).numpy(), [1.0])


def test_expnorm_closed_form_and_initial_parameters() -> None:
    basis = ExpNormalSmearing(0.0, 5.0, num_rbf=8, trainable=True).double()
    start = math.exp(-5.0)
    means = np.linspace(start, 1.0, 8)
    beta = (2.0 / 8 * (1.0 - start)) ** -2
    # Parameters are created in float32 (the default dtype), hence the float32 tolerance.
    np.testing.assert_allclose(basis.means.detach().numpy(), means, rtol=1e-6)
    np.testing.assert_allclose(basis.betas.detach().numpy(), np.full(8, beta), rtol=1e-6)
    means, betas = basis.means.detach().numpy(), basis.betas.detach().numpy()
    d = DISTANCES[:, None]
    envelope = np.where(d < 5.0, 0.5 * (np.cos(np.pi * d / 5.0) + 1.0), 0.0)
    expected = envelope * np.exp(-betas * (np.exp(-d) - means) ** 2)  # alpha = 5 / 5
    got = basis(torch.from_numpy(DISTANCES)).detach().numpy()
    assert got.shape == (len(DISTANCES), 8)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert {name for name, _ in basis.named_parameters()} == {"means", "betas"}


def test_expnorm_fixed_basis_uses_buffers_and_resets() -> None:
    basis = ExpNormalSmearing(0.5, 4.0, num_rbf=6, trainable=False)
    assert not list(basis.parameters())
    assert {name for name, _ in basis.named_buffers()} == {"means", "betas"}
    initial = basis.means.clone()
    basis.means.add_(1.0)
    basis.reset_parameters()
    torch.testing.assert_close(basis.means, initial)


def test_gaussian_closed_form() -> None:
    basis = GaussianSmearing(0.0, 5.0, num_rbf=11).double()
    centres = np.linspace(0.0, 5.0, 11)
    expected = np.exp(-0.5 / 0.5**2 * (DISTANCES[:, None] - centres) ** 2)
    np.testing.assert_allclose(basis(torch.from_numpy(DISTANCES)).detach().numpy(), expected)


def test_radial_basis_by_name_and_bad_arguments() -> None:
    assert isinstance(radial_basis("expnorm", 0.0, 5.0, 16, True), ExpNormalSmearing)
    assert isinstance(radial_basis("gauss", 0.0, 5.0, 16, True), GaussianSmearing)
    with pytest.raises(ValueError, match="rbf_type"):
        radial_basis("bessel", 0.0, 5.0, 16, True)
    with pytest.raises(ValueError, match="num_rbf"):
        ExpNormalSmearing(num_rbf=1)
    with pytest.raises(ValueError, match="cutoff_upper"):
        CosineCutoff(2.0, 1.0)
