"""Options that several commands share, declared once: the settings of a command (``--config
FILE`` and ``--set KEY=VALUE``, handed to the command loaded and validated) and the synthetic
long-video corpus of the video benchmarks."""

from __future__ import annotations

import functools
from typing import Callable

import click


def _settings_options(load: Callable, config_help: str, set_help: str):
    """A decorator adding ``--config`` and ``--set`` to a command, which receives
    ``config=load(config_path, overrides)`` instead of the two options."""

    def decorate(fn):
        @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help=config_help)
        @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=set_help)
        @functools.wraps(fn)
        def command(*args, config_path, overrides, **kwargs):
            return fn(*args, config=load(config_path, overrides), **kwargs)

        return command

    return decorate


def _load_run_config(path, overrides):
    from pipeline.config import load_config

    return load_config(path, overrides)


def _load_train_config(path, overrides):
    from pipeline.errors import ConfigError
    from models.train import TrainConfigError, load_train_config

    try:
        return load_train_config(path, overrides)
    except TrainConfigError as exc:  # models/ sits below pipeline/ and cannot raise pipeline.errors
        raise ConfigError(str(exc)) from None


#: ``--config``/``--set`` over the run config (:class:`pipeline.config.Config`).
config_options = _settings_options(
    _load_run_config, "YAML config (default: the package's configs/default.yaml).",
    "Override a dotted config key, e.g. --set align.eps=0.05 (repeatable).")

#: ``--config``/``--set`` over the trainer's settings (:class:`models.train.TrainConfig`).
train_config_options = _settings_options(
    _load_train_config, "YAML file of TrainConfig keys (default: TrainConfig's defaults).",
    "Set a TrainConfig key, e.g. --set steps=300 --set loss=norton_clip (repeatable).")


def video_corpus_options(duration_s: float, width: int, height: int, model: str):
    """``--duration-s --width --height --fps --model``: the generated long video of a video
    benchmark (:mod:`pipeline.synth.long_video`) and the open_clip model at random init; the
    defaults are the benchmark's."""
    options = [
        click.option("--duration-s", default=duration_s, show_default=True, help="Length of the generated video."),
        click.option("--width", default=width, show_default=True),
        click.option("--height", default=height, show_default=True),
        click.option("--fps", default=25.0, show_default=True, help="Frame rate of the generated video."),
        click.option("--model", default=model, show_default=True, help="open_clip model name (random init)."),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate
