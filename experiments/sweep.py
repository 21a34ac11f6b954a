"""A design sweep: one preset run at several settings to find where its comparison can be told apart.

    experiments/sweeps/demo.yaml        # the spec: a preset, fixed seeds, the arms compared, named settings
    pidistill sweep demo                # runs what is not run yet, prints and writes the table

Every setting is the preset with the sweep's `base` overrides, then its own, and the sweep's `seeds` and
`arms`. The seeds are part of the spec, fixed before any result is seen, and a sweep's seeds are not the
preset's: a setting chosen on the sweep's seeds is then confirmed by the preset's own seeds, which took no
part in choosing it.

A setting's run id is `sweep-<sweep>-<setting>-<config hash>`: rerunning the sweep resumes or reuses its
runs, and a setting whose overrides change gets a run of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from experiments.config import ConfigError, ExperimentConfig, load_config

SWEEPS_DIR = Path(__file__).parent / "sweeps"


class Setting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$", description="Short, for the table and the run id.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides of the preset.")
    seeds: int = Field(3, ge=2, description="Runs on the first this many of the sweep's seeds.")


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    preset: str = Field(description="The preset (or YAML config) every setting starts from.")
    base: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides applied before each setting's: the preset as the sweep started from it, so the "
        "sweep's runs stay what they were when the preset moves on (to the setting the sweep chose, say).",
    )
    seeds: list[int] = Field(
        min_length=2, description="Fixed before looking; not the preset's own. A setting takes the first few."
    )
    arms: list[str] = Field(
        min_length=2, description="The preset's arms to run; the last is compared with the first (the reference)."
    )
    settings: list[Setting] = Field(min_length=1)

    @field_validator("settings")
    @classmethod
    def _distinct_names(cls, settings: list[Setting]) -> list[Setting]:
        names = [s.name for s in settings]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"setting names repeat: {dupes}")
        return settings

    @model_validator(mode="after")
    def _enough_seeds(self) -> SweepSpec:
        if short := [s.name for s in self.settings if s.seeds > len(self.seeds)]:
            raise ValueError(f"settings {short} ask for more seeds than the sweep's {len(self.seeds)}")
        return self

    @property
    def reference(self) -> str:
        return self.arms[0]

    @property
    def compared(self) -> str:
        return self.arms[-1]


def sweep_names() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def load_sweep(name_or_path: str) -> SweepSpec:
    """A sweep by name (experiments/sweeps/NAME.yaml) or path; ConfigError naming what is wrong."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SWEEPS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"no sweep {name_or_path!r} (no file {path}); sweeps: {sweep_names()}")
    try:
        spec = SweepSpec.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        where = "; ".join(
            ": ".join(filter(None, [".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, ")]))
            for e in exc.errors()
        )
        raise ConfigError(f"sweep {path}: {where}") from None
    overlap = sorted(set(spec.seeds) & set(load_config(spec.preset).seeds))
    if overlap:
        raise ConfigError(
            f"sweep {spec.name}: seeds {overlap} are also the preset's own: a setting chosen on them would be "
            "confirmed by the seeds that chose it"
        )
    return spec


def check_only(spec: SweepSpec, only: list[str] | None) -> None:
    """ConfigError naming the settings `--only` asks for that the sweep does not have."""
    if unknown := sorted(set(only or []) - {s.name for s in spec.settings}):
        raise ConfigError(f"sweep {spec.name} has no settings {unknown}; settings: {[s.name for s in spec.settings]}")


def setting_config(spec: SweepSpec, setting: Setting) -> ExperimentConfig:
    """The preset with the sweep's base and the setting's overrides, the sweep's seeds and only its arms."""
    base = load_config(spec.preset)
    by_name = {a.name: a for a in base.arms}
    if missing := [a for a in spec.arms if a not in by_name]:
        raise ConfigError(f"sweep {spec.name}: preset {spec.preset} has no arms {missing}; arms: {list(by_name)}")
    arms = [by_name[a].model_dump() for a in spec.arms]
    try:
        return load_config(
            spec.preset,
            [f"{k}={json.dumps(v)}" for k, v in (spec.base | setting.set).items()]  # JSON is YAML: --set parses it back
            + [f"seeds={spec.seeds[: setting.seeds]}", f"arms={json.dumps(arms)}"],
        )
    except ConfigError as exc:
        raise ConfigError(f"sweep {spec.name}, setting {setting.name}: {exc}") from None


def setting_run_id(spec: SweepSpec, setting: Setting, config: ExperimentConfig) -> str:
    return f"sweep-{spec.name}-{setting.name}-{config.config_hash()[:8]}"


def describe(setting: Setting) -> str:
    changes = [f"{k}={json.dumps(v)}" for k, v in setting.set.items()] + [f"{setting.seeds} seeds"]
    return ", ".join(changes)
