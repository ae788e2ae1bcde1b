"""A tiny regressor and its data, used only to exercise the ``molssl`` command line.

The data are a fixed synthetic linear problem generated from a seed, so that a run can be
rebuilt from hyper-parameters alone and the test metric can be recomputed by hand.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


def make_regression_data(
    num_samples: int, num_features: int, noise: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Features ``x`` (num_samples, num_features) and targets ``y = x w + b + noise``.

    The same arguments always give the same tensors, whatever the global RNG state.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, num_features, generator=generator)
    weight = torch.randn(num_features, generator=generator)
    bias = torch.randn((), generator=generator)
    y = x @ weight + bias + noise * torch.randn(num_samples, generator=generator)
    return x, y


class ToyRegressionData(L.LightningDataModule):
    """Synthetic linear-regression data split 60/20/20 into train/val/test in a fixed order.

    Args:
        num_samples: Total number of samples across the three splits.
        num_features: Number of input features.
        noise: Standard deviation of the Gaussian noise added to the targets.
        seed: Seed of the generator that draws features, true weights and noise.
        batch_size: Samples per batch for every split.
    """

    def __init__(
        self,
        num_samples: int = 200,
        num_features: int = 4,
        noise: float = 0.1,
        seed: int = 0,
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        x, y = make_regression_data(num_samples, num_features, noise, seed)
        n_train, n_val = int(0.6 * num_samples), int(0.2 * num_samples)
        self.train_set = TensorDataset(x[:n_train], y[:n_train])
        self.val_set = TensorDataset(x[n_train : n_train + n_val], y[n_train : n_train + n_val])
        self.test_set = TensorDataset(x[n_train + n_val :], y[n_train + n_val :])
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return DataLoader(self.test_set, batch_size=self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        """The test features, for ``predict``."""
        return DataLoader(self.test_set, batch_size=self.batch_size)


class ToyRegressor(L.LightningModule):
    """A linear model trained with mean squared error; it owns its optimiser.

    Args:
        num_features: Number of input features.
        lr: Learning rate of plain SGD.
    """

    def __init__(self, num_features: int = 4, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(num_features, 1)
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        """Predicted targets, shape ``(batch,)``."""
        return self.linear(x).squeeze(-1)

    def _mse(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Mean squared error of one training batch."""
        loss = self._mse(batch)
        self.log("train/mse", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Logs the validation mean squared error (averaged over batches by sample count)."""
        self.log("val/mse", self._mse(batch), batch_size=batch[0].shape[0])

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Logs the test mean squared error (averaged over batches by sample count)."""
        self.log("test/mse", self._mse(batch), batch_size=batch[0].shape[0])

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Predicted targets of one batch."""
        return self(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD over all parameters."""
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class ToyRegressorWithData(ToyRegressor):
    """The toy regressor bringing its own data loaders, for runs without a datamodule.

    Args:
        num_features: Number of input features.
        lr: Learning rate of plain SGD.
        num_samples: Total number of samples, as in :class:`ToyRegressionData`.
        seed: Seed of the synthetic data.
    """

    def __init__(
        self, num_features: int = 4, lr: float = 0.1, num_samples: int = 200, seed: int = 0
    ) -> None:
        super().__init__(num_features=num_features, lr=lr)
        self.save_hyperparameters()
        self.data = ToyRegressionData(num_samples=num_samples, num_features=num_features, seed=seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of the built-in data."""
        return self.data.train_dataloader()

    def test_dataloader(self) -> DataLoader:
        """Test batches of the built-in data."""
        return self.data.test_dataloader()
