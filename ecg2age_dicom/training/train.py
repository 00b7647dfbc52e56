"""Fit the default model on PTB-XL training folds (v1: 1-4, fold 5 for early stopping) and
export it.

The recipe is deterministic for a given seed and runs on a 2-core CPU: records are z-scored
per lead at 100 Hz (the same rule the runtime applies at 500 Hz), ages are standardised with
the training set's mean and std (written to the card's output transform), and the trained
core is exported behind the fixed 500 -> 100 Hz front-end as ``model.keras``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.model import CardInput, configure_tensorflow, normalize, sha256_of
from ecg2age_dicom.training import data, network

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: the exported file and the card's output transform."""

    model_path: Path
    age_mean: float
    age_std: float
    epochs_run: int
    best_val_mae_years: float
    n_train: int


def _dataset(tf, x: np.ndarray, y: np.ndarray, batch: int, seed: int, train: bool):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if train:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)
    if train:

        def augment(signals, targets):
            # A circular time shift per record and a little noise: age depends on neither.
            length = tf.shape(signals)[1]
            shifts = tf.random.uniform((tf.shape(signals)[0], 1), 0, length, tf.int32, seed=seed)
            index = (tf.range(length)[None, :] + shifts) % length
            signals = tf.gather(signals, index, batch_dims=1)
            signals += tf.random.normal(tf.shape(signals), stddev=0.05, seed=seed)
            return signals, targets

        ds = ds.map(augment)
    return ds.prefetch(2)


def train(
    data_dir: Path,
    out_dir: Path,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    patience: int = 8,
    seed: int = 20261128,
    train_folds: tuple[int, ...] = data.TRAIN_FOLDS,
    validation_folds: tuple[int, ...] = data.VALIDATION_FOLDS,
    limit_per_fold: int | None = None,
    threads: int = 0,
    verbose: int = 2,
) -> TrainResult:
    """Train on ``train_folds``, keep the weights with the best loss on ``validation_folds``,
    export ``out_dir/model.keras``.

    Raises
    ------
    ModelError
        A test fold (9, 10) is asked for, or a fold is both trained and validated on.
    """
    if set(train_folds + validation_folds) & set(data.TEST_FOLDS):
        raise ModelError("folds 9-10 are the test set: never trained or validated on")
    if set(train_folds) & set(validation_folds):
        raise ModelError("a fold cannot be both trained and validated on")
    keras = configure_tensorflow(threads, threads)
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    training = data.load_ptbxl(data_dir, train_folds, limit_per_fold)
    validation = data.load_ptbxl(data_dir, validation_folds, limit_per_fold)
    age_mean, age_std = float(training.ages.mean()), float(training.ages.std())
    log.info(
        "training records=%d validation records=%d age mean=%.2f std=%.2f",
        len(training.ages),
        len(validation.ages),
        age_mean,
        age_std,
    )

    def prepare(records: data.Records) -> tuple[np.ndarray, np.ndarray]:
        x = normalize(records.signals, CardInput(normalization="per_lead_zscore"))
        return x, ((records.ages - age_mean) / age_std).astype(np.float32)

    x_train, y_train = prepare(training)
    x_val, y_val = prepare(validation)
    core = network.build_core()
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.02)
    core.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-3),
        loss=keras.losses.Huber(delta=1.0),
        metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
    )
    history = core.fit(
        _dataset(tf, x_train, y_train, batch_size, seed, train=True),
        validation_data=_dataset(tf, x_val, y_val, 256, seed, train=False),
        epochs=epochs,
        shuffle=False,  # the tf.data pipeline shuffles, with the seed
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_mae", patience=patience, restore_best_weights=True
            )
        ],
        verbose=verbose,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.keras"
    network.build_serving_model(core).save(model_path)
    best = float(min(history.history["val_mae"])) * age_std
    log.info("exported %s best validation MAE %.2f years", model_path, best)
    return TrainResult(
        model_path, age_mean, age_std, len(history.history["loss"]), best, len(y_train)
    )


CARD_TEMPLATE = """\
# ECG2Age-PTBXL: the default model of ecg2age-dicom, trained by this project on PTB-XL
# (Wagner et al. 2020, PhysioNet, CC BY 4.0). Same contract as ECG2Age: (B, 5000, 12) at
# 500 Hz, leads I, II, III, aVR, aVL, aVF, V1-V6, each lead z-scored; output: age in years
# after the [output] transform. Reproduce: see README, "The default model".
name = "ECG2Age-PTBXL"
version = "{version}"
intended_use = \"\"\"Research and demonstration only: NOT FOR CLINICAL USE. \\
Trained on {n_train} PTB-XL ECGs (Germany); not validated on other populations or devices.\"\"\"
validated_for_clinical_use = false
file = "model.keras"
sha256 = "{sha256}"
size_bytes = {size_bytes}
source_url = ""

[input]
sampling_rate_hz = 500
samples = 5000
leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
normalization = "per_lead_zscore"
scale = 1.0
length_policy = \"\"\"10 s at 500 Hz; longer recordings cropped to their centre, \\
shorter zero-padded on both sides (training records are all exactly 10 s)\"\"\"

[output]
# The network predicts a standardised age: years = output x scale + offset, with the
# training set's std and mean.
scale = {scale}
offset = {offset}
units = "a"
"""


def write_card(out_dir: Path, result: TrainResult, version: str) -> Path:
    """Write ``model.toml`` for a freshly exported model (metrics come from evaluation)."""
    card_path = out_dir / "model.toml"
    card_path.write_text(
        CARD_TEMPLATE.format(
            version=version,
            n_train=result.n_train,
            sha256=sha256_of(result.model_path),
            size_bytes=result.model_path.stat().st_size,
            scale=round(result.age_std, 4),
            offset=round(result.age_mean, 4),
        ),
        encoding="utf-8",
    )
    return card_path
