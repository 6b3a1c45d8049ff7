"""qevo: hardware-aware evolutionary mixed-precision quantization, from Python.

The same library as the ``qevo`` command line, called the same way::

    import qevo
    model = qevo.load()                      # the embedded model, or a HF dir / .gguf
    result = qevo.search(model, target="arm-neon", max_size_mb=3, generations=10)
    result.recommended.export("model.gguf")  # llama.cpp loads it
    result.to_pandas()                       # the front as a DataFrame (pandas optional)

Work runs in Rust with the GIL released; Ctrl-C stops a search at the end of the
current generation and raises KeyboardInterrupt. Library errors raise ``QevoError``
with the library's message. ``executor=qevo.RayExecutor(...)`` scores the evolution's
batches on Ray actors.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from . import _qevo
from ._qevo import QevoError, __version__
from .ray_executor import RayExecutor

__all__ = [
    "Model",
    "Plan",
    "QevoError",
    "RayExecutor",
    "SearchResult",
    "load",
    "profiles",
    "quantize",
    "search",
    "__version__",
]

Model = _qevo.Model

TextLike = Union[str, "os.PathLike[str]"]


def load(path: Optional[Union[str, "os.PathLike[str]"]] = None) -> Model:
    """Loads a Hugging Face model directory or a ``.gguf`` file (None: the embedded model)."""
    return _qevo.Model.load(None if path is None else os.fspath(path))


def profiles() -> List[Dict[str, Any]]:
    """The built-in hardware profiles (targets), each as a dict of its TOML fields."""
    return json.loads(_qevo.profiles_json())


class Plan:
    """A quantization plan: one (weight format, activation bits) per tensor, with its metrics.

    ``metrics`` holds KL to the FP model (nats/token), top-1 agreement, perplexity, size in
    bytes, bits per weight, latency (ms) and energy (mJ) on the target; a plan from a search
    also has held-out scores.
    """

    def __init__(self, model: Model, record: Dict[str, Any], outcome: Any = None):
        self._model = model
        self._outcome = outcome
        self._record = record

    @property
    def metrics(self) -> Dict[str, Any]:
        return dict(self._record.get("metrics") or {})

    @property
    def tensors(self) -> Dict[str, Dict[str, Any]]:
        """Tensor name -> {"format", "act_bits"[, "written"]}."""
        return {t["name"]: {k: v for k, v in t.items() if k != "name"} for t in self._record["tensors"]}

    @property
    def failing(self) -> List[Dict[str, Any]]:
        """The limit checks this plan fails (empty for a feasible plan)."""
        return list(self._record.get("failing", []))

    def __getattr__(self, name: str) -> Any:
        metrics = self.__dict__.get("_record", {}).get("metrics") or {}
        if name in metrics:
            return metrics[name]
        raise AttributeError(name)

    def to_dict(self) -> Dict[str, Any]:
        """The plan as a plain dict: the plan.json schema (model fingerprint, target, metrics, tensors)."""
        return json.loads(json.dumps(self._record))

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the plan as a plan.json file that ``qevo export`` and ``qevo eval --plan`` read."""
        tmp = os.fspath(path) + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._record, f, indent=2)
        os.replace(tmp, os.fspath(path))

    def export(
        self,
        path: Union[str, "os.PathLike[str]"],
        format: Optional[str] = None,
        fallback: bool = False,
    ) -> Dict[str, Any]:
        """Writes the quantized model.

        ``format``: "gguf" (llama.cpp; the default for a ``.gguf`` path), "tensor-types"
        (llama-quantize overrides) or "safetensors" (a directory; packed integer formats).
        ``fallback``: map formats GGUF cannot hold to the nearest GGML type. Returns what
        was written (bytes, tensors).
        """
        path = os.fspath(path)
        if format is None:
            format = "gguf" if path.endswith(".gguf") else "safetensors"
        summary = _qevo.export(self._model, json.dumps(self._record), path, format, self._outcome, fallback)
        return json.loads(summary)

    def __repr__(self) -> str:
        m = self.metrics
        if not m:
            return f"Plan({len(self._record['tensors'])} tensors)"
        return "Plan(kl={:.4g}, size={:.3f} MB, bpw={:.3f}, latency={:.2f} ms)".format(
            m.get("kl", float("nan")),
            m.get("size_bytes", 0) / 1e6,
            m.get("bits_per_weight", float("nan")),
            m.get("latency_ms", float("nan")),
        )


class SearchResult:
    """A finished search: ``front`` (the Pareto plans, smallest first), ``recommended``
    (the plan the fitness weights and limits pick, None when nothing is feasible),
    ``history`` (one dict per generation), and dict / pandas views of them."""

    def __init__(self, model: Model, outcome: Any):
        self._model = model
        self._outcome = outcome
        self.front: List[Plan] = [Plan(model, r, outcome) for r in json.loads(outcome.front_json())]
        self.history: List[Dict[str, Any]] = json.loads(outcome.history_json())
        self.summary: Dict[str, Any] = json.loads(outcome.summary_json())
        closest = outcome.infeasible_json()
        self.infeasible_closest: Optional[Plan] = None if closest is None else Plan(model, json.loads(closest), outcome)

    @property
    def recommended(self) -> Optional[Plan]:
        i = self._outcome.recommended
        return None if i is None else self.front[i]

    @property
    def evaluations(self) -> List[Dict[str, Any]]:
        """Every plan the evolution scored, in order (generation, genome, scores)."""
        return json.loads(self._outcome.evaluations_json())

    def save(self, out_dir: Union[str, "os.PathLike[str]"]) -> None:
        """Writes plan.json, plan.yaml, front.json and history.jsonl, as ``qevo search --out``."""
        self._outcome.save(os.fspath(out_dir))

    def write_optuna_journal(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes every evaluated plan as an Optuna journal file (``optuna.load_study``,
        ``optuna-dashboard FILE``)."""
        self._outcome.write_optuna_journal(os.fspath(path))

    def to_dict(self) -> Dict[str, Any]:
        """Plain dicts: {"front": [...], "recommended": index or None, "history": [...], "summary": {...}}."""
        return {
            "front": [p.to_dict() for p in self.front],
            "recommended": self._outcome.recommended,
            "history": [dict(h) for h in self.history],
            "summary": dict(self.summary),
        }

    def to_pandas(self) -> Any:
        """The front as a pandas DataFrame: one row per plan, one column per metric, and
        ``recommended`` marking the recommended row. Needs pandas."""
        pd = _pandas()
        rows = []
        for i, p in enumerate(self.front):
            row = dict(p.metrics)
            row["recommended"] = i == self._outcome.recommended
            rows.append(row)
        return pd.DataFrame(rows)

    def history_frame(self) -> Any:
        """The history as a pandas DataFrame, one row per generation. Needs pandas."""
        pd = _pandas()
        return pd.json_normalize(self.history)

    def __repr__(self) -> str:
        return f"SearchResult({len(self.front)} plans on the front, recommended={self.recommended!r})"


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("this view needs pandas: pip install pandas (or use to_dict())") from e
    return pandas


def _text(value: Optional[TextLike], what: str) -> Optional[str]:
    """A str is the text itself; a path-like (pathlib.Path) is read as UTF-8."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        with open(os.fspath(value), encoding="utf-8") as f:
            return f.read()
    raise TypeError(f"{what}: expected a str (the text) or a path-like, got {type(value).__name__}")


def _formats(value: Optional[Union[str, Sequence[str]]]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)


def search(
    model: Model,
    text: Optional[TextLike] = None,
    heldout: Optional[TextLike] = None,
    target: str = "arm-neon",
    formats: Optional[Union[str, Sequence[str]]] = None,
    max_size_mb: Optional[float] = None,
    max_latency_ms: Optional[float] = None,
    max_energy_mj: Optional[float] = None,
    max_kl: Optional[float] = None,
    generations: Optional[int] = None,
    population: Optional[int] = None,
    seed: int = 0,
    unit: str = "role",
    tie_qkv: bool = False,
    act_bits: Optional[Union[str, Iterable[int]]] = None,
    time_budget_s: Optional[float] = None,
    weights: Optional[Sequence[float]] = None,
    constraints: Sequence[str] = (),
    baselines: bool = True,
    cache: bool = True,
    surrogate: bool = True,
    epsilon: Union[float, Sequence[float]] = 0.0,
    crossover: str = "auto",
    sensitivity: str = "auto",
    imatrix: bool = False,
    seq_len: Optional[int] = None,
    calib_windows: Optional[int] = None,
    screen_windows: Optional[int] = None,
    heldout_windows: Optional[int] = None,
    checkpoint: Optional[Union[str, "os.PathLike[str]"]] = None,
    resume: bool = False,
    executor: Optional[RayExecutor] = None,
    progress: Optional[Callable[[Dict[str, Any]], Optional[bool]]] = None,
    optuna_journal: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> SearchResult:
    """Evolves per-tensor quantization plans for ``model`` on ``target`` (NSGA-II over
    KL to FP, size, latency and energy) and returns the Pareto front.

    - ``text`` / ``heldout``: calibration and held-out text (a str is the text, a
      ``pathlib.Path`` is read); default: the embedded splits; without ``heldout`` the
      last fifth of ``text`` is held out.
    - ``target``: a built-in profile (``qevo.profiles()``) or a profile TOML path.
    - ``formats``: presets "ggml", "int" and/or names ("q4_k", "int4-asym-g128"), as a
      comma-separated str or a list (default "ggml"; "int" for an encoder).
    - ``max_*``: limits (constraints, not penalties); ``constraints``: target overrides
      such as "max_memory_mb=100".
    - ``generations`` (default 40), ``population`` (32), ``seed``: one seed drives all
      randomness, so the same seed gives the same front.
    - ``seq_len`` (128), ``calib_windows`` (8), ``screen_windows`` (2),
      ``heldout_windows`` (8): the token windows plans are scored on.
    - ``checkpoint``: a file the search checkpoints to after every generation;
      ``resume=True`` continues from it.
    - ``executor``: ``qevo.RayExecutor(...)`` scores the evolution's batches on Ray
      actors (same seed, same front as a local run).
    - ``progress(record)``: called after every generation with its history record;
      returning False stops the search there.
    - ``optuna_journal``: also write every evaluated plan as an Optuna journal file.
    - ``cache=False`` turns off the fitness memo, prefix cache, multi-fidelity screening
      and surrogate; ``surrogate=False`` only the surrogate. ``epsilon``: skip scoring an
      offspring an archive plan is within a factor 1 + epsilon of in every objective (one
      value, or [KL, bytes, ms, mJ]). ``crossover``: "auto", "uniform", "one-point",
      "two-point".
    - ``sensitivity``: how the per-unit sensitivity table is filled: "measured" (every
      cell), "scaled" (two probes per unit, the rest scaled by weight error) or "auto"
      (scaled when the measured table would be large).

    Ctrl-C stops the search after the current generation (its checkpoint written) and
    raises KeyboardInterrupt. Errors raise ``QevoError`` naming the setting at fault.
    """
    settings: Dict[str, Any] = {
        "text": _text(text, "text"),
        "heldout": _text(heldout, "heldout"),
        "target": target,
        "formats": _formats(formats),
        "unit": unit,
        "tie_qkv": tie_qkv,
        "seed": seed,
        "time_budget_s": time_budget_s,
        "weights": None if weights is None else [float(w) for w in weights],
        "max_size_mb": max_size_mb,
        "max_latency_ms": max_latency_ms,
        "max_energy_mj": max_energy_mj,
        "max_kl": max_kl,
        "constraints": list(constraints),
        "baselines": baselines,
        "cache": cache,
        "surrogate": surrogate,
        "epsilon": str(float(epsilon)) if isinstance(epsilon, (int, float)) else ",".join(str(float(e)) for e in epsilon),
        "crossover": crossover,
        "sensitivity": sensitivity,
        "imatrix": imatrix,
        "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
        "resume": resume,
    }
    if act_bits is not None:
        settings["act_bits"] = act_bits if isinstance(act_bits, str) else ",".join(str(b) for b in act_bits)
    for key, value in (
        ("generations", generations),
        ("population", population),
        ("seq_len", seq_len),
        ("calib_windows", calib_windows),
        ("screen_windows", screen_windows),
        ("heldout_windows", heldout_windows),
    ):
        if value is not None:
            settings[key] = value
    settings_json = json.dumps(settings)
    callback = None
    if progress is not None:
        callback = lambda record_json: progress(json.loads(record_json))  # noqa: E731
    bridge = None
    if executor is not None:
        bridge = executor._bind(model, settings_json)
    try:
        outcome = _qevo.search(model, settings_json, bridge, callback)
    finally:
        if bridge is not None:
            bridge.close()
    result = SearchResult(model, outcome)
    if optuna_journal is not None:
        result.write_optuna_journal(optuna_journal)
    return result


def quantize(
    model: Model,
    format: str,
    act_bits: int = 16,
    text: Optional[TextLike] = None,
    target: str = "arm-neon",
    seq_len: int = 128,
    max_windows: int = 8,
) -> Plan:
    """Every tensor in one ``format`` ("q4_k", "int8-sym-channel", ...), scored against
    the FP model on ``text`` (default: the embedded held-out split) and priced on
    ``target``. ``plan.export("model.gguf")`` writes it."""
    record = _qevo.quantize(model, format, act_bits, _text(text, "text"), target, seq_len, max_windows)
    return Plan(model, json.loads(record))
