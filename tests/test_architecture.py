"""The package's structure (docs/architecture.md): no import cycle between any two modules, the
light layers load no SimPy, Hydra or matplotlib, and the closed sets of names the config checks
against are the ones the packages register. `lint-imports` (pyproject.toml) checks the layers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v) & modules:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            on_stack.difference_update(comp)
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return out


def test_no_module_imports_itself_through_others():
    # every import counts: module level, inside functions (lazy) and under TYPE_CHECKING
    graph = grimp.build_graph("sim", exclude_type_checking_imports=False)
    modules = {m for m in graph.modules if m.startswith("sim.")}
    assert len(modules) > 30
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    assert _cycles(graph, {"a", "b", "c"}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("sim.config.schema", ("simpy", "hydra", "omegaconf", "matplotlib", "pandas")),
        ("sim.results.metrics", ("simpy", "hydra", "omegaconf", "matplotlib")),
        ("sim.studies.sweep", ("simpy", "hydra", "omegaconf")),
        ("sim.output.plots", ("simpy", "hydra", "omegaconf")),
        ("sim.output.validation", ("simpy", "hydra", "omegaconf")),
        ("sim.studies.validate", ("hydra", "omegaconf", "matplotlib")),
        ("sim.studies.run", ("hydra", "omegaconf")),
        ("sim", ("simpy", "hydra", "omegaconf", "matplotlib", "pandas")),
    ],
)
def test_light_layers_do_not_load_heavy_packages(module, absent):
    code = f"import sys, {module}; print(' '.join(m for m in {absent!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == ""


def test_config_names_are_the_registered_implementations():
    from sim.config import names
    from sim.des.autoscale import AUTOSCALERS
    from sim.des.overflow import OVERFLOW
    from sim.des.router import ROUTERS
    from sim.hardware.kvcache import PROFILERS
    from sim.workload.arrivals import ARRIVALS
    from sim.workload.traces import READERS

    assert tuple(ARRIVALS) == names.ARRIVAL_PROCESSES
    assert tuple(READERS) == names.TRACE_FORMATS
    assert tuple(ROUTERS) == names.ROUTERS
    assert tuple(AUTOSCALERS) == names.AUTOSCALERS
    assert tuple(PROFILERS) == names.MEMORY_PROFILERS
    assert tuple(OVERFLOW) == names.OVERFLOW


GROUPS = ("gpu", "model", "engine", "slo", "api", "fleet", "workload", "fleet/autoscaler")


@pytest.mark.parametrize("group", GROUPS)
def test_options_load_as_hydra_composes_them(group):
    """`load_option` builds an option's dataclass without Hydra; Hydra's composition of the same
    option (`fleetsim <group>=<name>`) gives the same values of the same types, the options its
    `defaults:` list extends included (api=tier1 is an enabled API, as api/default makes it)."""
    import sim
    from sim.config.schema import AUTOSCALER_CONFIGS, Config, load_option, options

    for name in options(group):
        ours = load_option(group, name)
        if group == "fleet/autoscaler":
            kind, hydra = AUTOSCALER_CONFIGS[name], sim.compose([f"{group}={name}"]).fleet.autoscaler
        else:
            kind, hydra = typing.get_type_hints(Config)[group], getattr(sim.compose([f"{group}={name}"]), group)
        assert isinstance(ours, kind)
        assert dataclasses.asdict(ours) == dataclasses.asdict(hydra), (group, name)
        assert repr(ours) == repr(hydra), (group, name)  # same types too (2 vs 2.0)


def test_option_loader_refuses_unknown_keys():
    from sim.config.errors import ConfigError
    from sim.config.schema import GpuConfig, build

    with pytest.raises(ConfigError, match=r"gpu\.mem_bw_tbs.*did you mean gpu\.mem_bw_tbps"):
        build(GpuConfig, {"mem_bw_tbs": 3.35}, "gpu")


def test_catalogue_values_come_from_yaml_only():
    """A GPU's specs, a model's architecture and the engine's fitted factors have no default in
    the dataclasses (an option file must give them), and `Config()` is the command line's default
    scenario (it lacked the model's flop_params_b and intermediate and the GPU's visible memory)."""
    import sim
    from sim.config.errors import ConfigError
    from sim.config.schema import Config, GpuConfig, build

    with pytest.raises(ConfigError, match=r"^gpu\.memory_gib='\(missing\)': must be given"):
        build(GpuConfig, {"name": "mi300x"}, "gpu")
    for cls, catalogue in (
        (GpuConfig, {"memory_gib", "mem_bw_tbps", "bf16_tflops", "price_per_hour"}),
        (typing.get_type_hints(Config)["model"], {"params_b", "layers", "hidden", "vocab"}),
        (typing.get_type_hints(Config)["engine"], {"eta_weights", "eta_kv", "step_overhead_ms"}),
    ):
        defaults = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        assert not catalogue & defaults, cls
    assert dataclasses.asdict(Config()) == dataclasses.asdict(sim.compose([]))


def test_run_config_yaml_is_what_omegaconf_writes():
    """config.yaml of a run is written without OmegaConf, byte for byte as OmegaConf would,
    strings that read back as numbers or booleans quoted."""
    from omegaconf import OmegaConf

    import sim
    from sim.studies.run import config_yaml

    for overrides in ([], ["fleet=autoscaled", "workload=diurnal", "api=tiered"], ["workload=mix"]):
        cfg = sim.compose(overrides)
        assert config_yaml(cfg) == OmegaConf.to_yaml(OmegaConf.structured(cfg))
    odd = sim.compose(["model.name=1e3", "gpu.name=yes", "slo.name=nan", "api.name=Off", "workload.name='007'"])
    assert config_yaml(odd) == OmegaConf.to_yaml(OmegaConf.structured(odd))


def test_option_loader_types_values_as_declared():
    """A user's option file goes through the same typing as Hydra's: numbers written as text are
    numbers, yes/no are booleans, and a value of the wrong kind names its key."""
    from sim.config.errors import ConfigError
    from sim.config.schema import ApiConfig, EngineConfig, GpuConfig, build, load_option

    h100, vllm = load_option("gpu", "h100"), load_option("engine", "vllm")
    gpu = build(GpuConfig, {"bf16_tflops": "1.5e3", "max_tp": "8", "price_per_hour": 2}, "gpu", h100)
    assert gpu.bf16_tflops == 1500.0 and gpu.max_tp == 8 and isinstance(gpu.price_per_hour, float)
    assert build(EngineConfig, {"prefix_caching": "no"}, "engine", vllm).prefix_caching is False
    assert build(ApiConfig, {"rpm": None}, "api").rpm is None  # optional: null allowed
    for cls, data, key in (
        (GpuConfig, {"memory_gib": None}, "gpu.memory_gib"),  # not optional
        (GpuConfig, {"max_tp": 8.5}, "gpu.max_tp"),
        (GpuConfig, {"mem_bw_tbps": "fast"}, "gpu.mem_bw_tbps"),
        (EngineConfig, {"prefix_caching": "maybe"}, "engine.prefix_caching"),
        (GpuConfig, {"bf16_tflops": True}, "gpu.bf16_tflops"),
    ):
        with pytest.raises(ConfigError, match=rf"^{key}="):
            build(cls, data, key.split(".")[0])


def test_config_yaml_of_a_config_built_in_python():
    """Values set in Python with looser types (an int for a float, 1 for a bool, a number for a
    name, a Path for a file) are written as OmegaConf would write them."""
    import dataclasses
    from pathlib import Path

    from omegaconf import OmegaConf

    import sim
    from sim.studies.run import config_yaml

    cfg = sim.compose(["workload=trace"])
    cfg.workload = dataclasses.replace(cfg.workload, rate=5, path=Path("traces/synthetic_azure.csv"))
    cfg.fleet.sleep.enabled = 1
    cfg.model.name = 7
    text = config_yaml(cfg)
    assert "path: traces/synthetic_azure.csv" in text and "name: '7'" in text
    expected = OmegaConf.to_yaml(
        OmegaConf.structured(
            dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, path="traces/synthetic_azure.csv"))
        )
    )
    assert text == expected


def test_no_long_functions_outside_the_replica_scheduler():
    """No function of the package is over 60 lines, but in the replica scheduler
    (sim/des/engine.py), which keeps one iteration's logic in one place."""
    import ast

    long = []
    for path in sorted((ROOT / "sim").rglob("*.py")):
        if path.name == "engine.py" and path.parent.name == "des":
            continue
        long += [
            f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60
        ]
    assert long == []
