"""The Python API's entry points that accept Hydra's types: `sim.run` (a Config, a nested
dict or an OmegaConf node) and `sim.compose` (the Config the command line would build).

Converting a dict or a node into the typed `Config` is OmegaConf's job (types checked, values
coerced, unknown keys refused with the nearest known one), so it lives here, in the only
package that imports Hydra; below this layer every function takes a `Config`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sim.config.errors import ConfigError
from sim.config.schema import Config, _did_you_mean, conf_dir, unknown_keys

if TYPE_CHECKING:  # the simulator and the planner load on use: `sim.compose` and --help stay light
    from sim.studies.plan import PlanConfig
    from sim.studies.run import Result
    from sim.workload.build import Workload


@functools.cache
def schema(cls: type = Config) -> Any:
    """The OmegaConf schema of `cls` (Config, or the planner's config that holds one): the
    dataclasses' structure and types, with `fleet.autoscaler` an open mapping, since each
    autoscaler of the `fleet/autoscaler` group has keys of its own (FleetConfig turns the mapping
    into that autoscaler's dataclass, refusing keys it does not have). Built once per process
    (a third of a second): callers merge it (OmegaConf.merge copies it) and never change it."""
    from omegaconf import OmegaConf, open_dict

    from sim.config.schema import FixedAutoscaler, plain

    node = OmegaConf.structured(cls)
    with open_dict(node.fleet):
        node.fleet.autoscaler = OmegaConf.create(plain(FixedAutoscaler()))
    OmegaConf.set_struct(node.fleet.autoscaler, False)
    pc = node.platform
    for mapping in (pc.deployments, pc.escalation.class_share, pc.budget_gpus, pc.pools, pc.disaggregated):
        OmegaConf.set_struct(mapping, False)  # names of the user's own: deployments, classes, GPU types
    return node


def to_config(obj: Any) -> Config:
    """Return a `Config` from a Config, a nested dict or an OmegaConf node (type-checked)."""
    if isinstance(obj, Config):
        return obj
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(schema(Config), obj)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        first = _closed_set(str(exc).splitlines()[0]) + _did_you_mean(key)
        raise ConfigError(key, getattr(exc, "value", None) or "?", first) from None
    unknown_keys(cfg, "")
    return cfg  # type: ignore[return-value]


def _closed_set(text: str) -> str:
    """OmegaConf's refusal of a name outside an Enum's closed set, in fleetsim's words."""
    import re

    m = re.match(r"Invalid value '[^']*', expected one of \[([^\]]*)\]", text)
    return f"must be one of {m.group(1)}" if m else text


def run(config: Any, workload: Workload | None = None) -> Result:
    """Simulate one scenario (`sim.studies.run.run`) from a Config, a nested dict or an
    OmegaConf node. With `seeds`, once per seed, the summary reporting means and intervals."""
    from sim.studies.run import run as run_config

    return run_config(to_config(config), workload)


@functools.cache
def register_configs() -> None:
    """Put the schemas in Hydra's config store (once per process: the store keeps them)."""
    from hydra.core.config_store import ConfigStore

    from sim.studies.plan import PlanAppConfig

    ConfigStore.instance().store(name="base_config", node=schema(Config))
    ConfigStore.instance().store(name="base_plan", node=schema(PlanAppConfig))


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> Config:
    """The validated-type Config the command line would build from these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        try:
            node = hydra_compose(config_name=config_name, overrides=list(overrides))
        except ConfigCompositionException as exc:
            raise _refused_choice(exc) or exc from None
    return to_config(node)


def _compose_node(overrides: Sequence[str], config_name: str = "config"):
    """Hydra's composition of these overrides: inside a running Hydra app (the CLIs) through
    its own loader, elsewhere through a fresh one."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    try:
        if GlobalHydra.instance().is_initialized():
            return hydra_compose(config_name=config_name, overrides=list(overrides))
        register_configs()
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except ConfigCompositionException as exc:
        raise _refused_choice(exc) or exc from None


def platform_configs(base: Sequence[str], platform, config_name: str = "config") -> dict[str, Config]:
    """Each deployment's scenario: the base overrides (the command line's, less those of the
    platform) and then the deployment's own. An override a deployment cannot compose is refused
    naming the deployment (`platform.deployments.NAME: ...`)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    kept = [o for o in base if not o.lstrip("+~").startswith("platform")]
    out = {}
    for name, own in platform.deployments.items():
        key = f"platform.deployments.{name}"
        if not isinstance(own, (list, tuple)) or not all(isinstance(o, str) for o in own):
            raise ConfigError(key, own, "must be a list of overrides, e.g. [model=llama3-70b, gpu=h100]")
        try:
            node = _compose_node([*kept, *own], config_name)
            out[name] = split_config(node)[0] if config_name == "plan" else to_config(node)
        except ConfigError as exc:
            raise ConfigError(key, exc.value, f"{exc.key}: {exc.allowed}") from None
        except (HydraException, OmegaConfBaseException) as exc:
            import re

            from sim.config.schema import options

            first = str(exc).strip().splitlines()[0]
            m = re.search(r"Could not find '([\w/]+)/([^']+)'", first)
            if m:  # an option the group does not have
                group, name = m.groups()
                raise ConfigError(
                    f"{key}: {group}", name, f"unknown option; known: {', '.join(options(group))}"
                ) from None
            raise ConfigError(key, " ".join(own), first) from None
    return out


def run_platform(overrides: Sequence[str] = ()):
    """Compose `overrides` (naming a platform, e.g. `platform=two_models`) and simulate every
    deployment (`sim.studies.platform.run_platform`)."""
    return run_platform_node(_compose_node(overrides), overrides)


def run_platform_node(node: Any, overrides: Sequence[str]):
    """A composed config that declares deployments, simulated (its `overrides`: the base of
    every deployment's own)."""
    from sim.studies.platform import run_platform as simulate_platform

    cfg = to_config(node)
    if not cfg.platform.deployments:
        raise ConfigError("platform", cfg.platform.name, "declares no deployments (platform=NAME with deployments)")
    return simulate_platform(platform_configs(overrides, cfg.platform), cfg.platform, cfg.seed)


def _refused_choice(exc: Exception) -> ConfigError | None:
    """An override outside a closed set (`fleet.router=x`) as the ConfigError validation gives."""
    import re

    m = re.search(r"override (\S+?)=(\S*)", str(exc))
    allowed = _closed_set(str(exc.__cause__ or "").splitlines()[0] if exc.__cause__ else "")
    if m and allowed.startswith("must be one of"):
        return ConfigError(m.group(1), m.group(2), allowed)
    return None


def split_config(node) -> tuple[Config, PlanConfig]:
    """The scenario and the plan section of a composed `fleetsim-plan` config (type-checked)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from sim.studies.plan import PlanAppConfig

    if isinstance(node, PlanAppConfig):
        app = node
    else:
        try:
            app = OmegaConf.to_object(OmegaConf.merge(schema(PlanAppConfig), node))
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "config"
            raise ConfigError(key, getattr(exc, "value", None) or "?", str(exc).splitlines()[0]) from None
    scenario = {f.name: getattr(app, f.name) for f in dataclasses.fields(Config)}
    return Config(**scenario), app.plan
