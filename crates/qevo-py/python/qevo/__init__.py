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
    "setting_defaults",
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
        ``fallback``: map formats GGUF cannot hold to the nearest GGML type. Returns the
        library's export report (``qevo export`` prints the same): format, path,
        ``file_bytes``, ``plan_bytes``, ``fallbacks``, and the format's own counts under
        ``written``.
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
    ``history`` (one dict per generation), ``tuned`` (with ``tune_front``: each tuned
    plan's KL before and after), and dict / pandas views of them."""

    def __init__(self, model: Model, outcome: Any):
        self._model = model
        self._outcome = outcome
        self.front: List[Plan] = [Plan(model, r, outcome) for r in json.loads(outcome.front_json())]
        self.history: List[Dict[str, Any]] = json.loads(outcome.history_json())
        self.summary: Dict[str, Any] = json.loads(outcome.summary_json())
        self.tuned: List[Dict[str, Any]] = json.loads(outcome.tuned_json())
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
        """Writes every output file, as ``qevo search --out`` does (the same library
        function): plan.json / plan.yaml, front.json, history.jsonl, imatrix.gguf (when
        scored with one), tuned/ and tuned.json (with ``tune_front``) and the report
        (report.json, the SVGs, report.html)."""
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


def _joined(value: Any) -> Any:
    """A list setting ("formats", "act_bits", "weights", "epsilon") as the library's
    comma-separated text; a str (or None) passes unchanged."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return repr(float(value))
    return ",".join(repr(float(v)) if isinstance(v, float) else str(v) for v in value)


def _setting(name: str, value: Any) -> Any:
    """A keyword's value in the JSON shape of the library's field of the same name."""
    if name in ("formats", "act_bits", "weights", "epsilon"):
        return _joined(value)
    if name == "time_budget" and isinstance(value, (int, float)):
        return repr(float(value))
    if name == "constraints":
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def setting_defaults() -> Dict[str, Any]:
    """Every setting of ``search`` with the library's default (``qevo::search::Settings``):
    one keyword each, under the same name as the ``qevo search`` flag."""
    return json.loads(_qevo.settings_json())


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
    tie_fused: bool = False,
    act_bits: Optional[Union[str, Iterable[int]]] = None,
    time_budget: Optional[Union[float, str]] = None,
    weights: Optional[Union[str, Sequence[float]]] = None,
    constraints: Sequence[str] = (),
    prefill_tokens: Optional[int] = None,
    decode_tokens: Optional[int] = None,
    baselines: bool = True,
    random_search: bool = False,
    cache: bool = True,
    max_memory: Optional[str] = None,
    surrogate: bool = True,
    epsilon: Optional[Union[float, str, Sequence[float]]] = None,
    crossover: str = "auto",
    sensitivity: str = "auto",
    head: str = "auto",
    imatrix: bool = False,
    imatrix_file: Optional[Union[str, "os.PathLike[str]"]] = None,
    rounding: str = "block",
    seq_len: Optional[int] = None,
    calib_windows: Optional[int] = None,
    screen_windows: Optional[int] = None,
    heldout_windows: Optional[int] = None,
    validation_windows: Optional[int] = None,
    refine: bool = True,
    checkpoint: Optional[Union[str, "os.PathLike[str]"]] = None,
    resume: bool = False,
    tune_front: int = 0,
    tune_steps: Optional[int] = None,
    tune_sub_scales: bool = False,
    executor: Optional[RayExecutor] = None,
    progress: Optional[Callable[[Dict[str, Any]], Optional[bool]]] = None,
    optuna_journal: Optional[Union[str, "os.PathLike[str]"]] = None,
    time_budget_s: Optional[float] = None,
) -> SearchResult:
    """Evolves per-tensor quantization plans for ``model`` on ``target`` (NSGA-II over
    KL to FP, size, latency and energy) and returns the Pareto front.

    Every setting is the library's ``search::Settings`` field of the same name, which is
    also the ``qevo search`` flag (``max_size_mb`` is ``--max-size-mb``; ``cache=False``
    is ``--no-cache``); a keyword left at None takes the library default
    (``qevo.setting_defaults()``).

    - ``text`` / ``heldout``: calibration and held-out text (a str is the text, a
      ``pathlib.Path`` is read); default: the embedded splits; without ``heldout`` the
      last fifth of ``text`` is held out.
    - ``target``: a built-in profile (``qevo.profiles()``) or a profile TOML path.
    - ``formats``: presets "ggml", "int" and/or names ("q4_k", "int4-asym-g128"), as a
      comma-separated str or a list (default "ggml"; "int" for an encoder).
    - ``max_*``: limits (constraints, not penalties); ``constraints``: target overrides
      such as "max_memory_mb=100"; ``prefill_tokens`` / ``decode_tokens``: the workload.
    - ``generations`` (default 40), ``population`` (32), ``seed``: one seed drives all
      randomness, so the same seed gives the same front. ``time_budget``: seconds, or
      "90s", "10m", "1h" (``time_budget_s`` is its older name).
    - ``seq_len`` (128), ``calib_windows`` (8), ``screen_windows`` (2),
      ``heldout_windows`` (8): the token windows plans are scored on;
      ``validation_windows`` (8): calibration text after the calibration windows, never
      fitted on, on which the recommended plan is chosen (0: on the calibration windows).
    - ``refine=False`` skips the refine stage (at a size limit, a greedy local search on
      measured KL from the best plans and the Lagrangian plan at the limit).
    - ``act_bits="16"``: a weights-only runtime (llama.cpp's GGUF): no activation
      choice is scored or chosen.
    - ``imatrix=True`` scores GGML types with an importance matrix collected on the
      calibration windows, ``imatrix_file`` with that file's; ``rounding``: "block"
      (llama.cpp's) or "output" (qevo's output-error rounding).
    - ``checkpoint``: a file the search checkpoints to after every generation;
      ``resume=True`` continues from it.
    - ``tune_front=K``: after the search, tune the K front plans nearest the recommended
      size (``tune_steps`` steps each, ``tune_sub_scales``); ``result.tuned`` holds their
      scores and ``save`` writes their GGUFs.
    - ``executor``: ``qevo.RayExecutor(...)`` scores the evolution's batches on Ray
      actors (same seed, same front as a local run).
    - ``progress(record)``: called after every generation with its history record;
      returning False stops the search there.
    - ``optuna_journal``: also write every evaluated plan as an Optuna journal file.
    - ``cache=False`` turns off the fitness memo, prefix cache, multi-fidelity screening
      and surrogate; ``surrogate=False`` only the surrogate. ``epsilon``: skip scoring an
      offspring an archive plan is within a factor 1 + epsilon of in every objective (one
      value, or [KL, bytes, ms, mJ]). ``crossover``: "auto", "uniform", "one-point",
      "two-point". ``baselines=False`` skips the Lagrangian baseline; ``random_search``
      also runs random search with the same budget.
    - ``sensitivity``: how the per-unit sensitivity table is filled: "measured" (every
      cell), "scaled" (two probes per unit, the rest scaled by weight error) or "auto"
      (scaled when the measured table would be large).
    - ``head``: how calibration scores run the output layer: "full", "sampled" (the FP
      top-k, the next 192 ranked tokens and the next token per position, the rest's mass
      estimated by ratio) or "auto" (sampled when the output layer outweighs the blocks).

    Ctrl-C stops the search after the current generation (its checkpoint written) and
    raises KeyboardInterrupt. Errors raise ``QevoError`` naming the setting at fault.
    """
    given = dict(locals())
    if time_budget is None and time_budget_s is not None:
        given["time_budget"] = time_budget_s
    settings = {
        name: _setting(name, given[name]) for name in setting_defaults() if given[name] is not None
    }
    request = json.dumps({"settings": settings, "text": _text(text, "text"), "heldout": _text(heldout, "heldout")})
    callback = None
    if progress is not None:
        callback = lambda record_json: progress(json.loads(record_json))  # noqa: E731
    bridge = None
    if executor is not None:
        bridge = executor._bind(model, request)
    try:
        outcome = _qevo.search(model, request, bridge, callback)
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
    seq_len: Optional[int] = None,
    max_windows: Optional[int] = None,
    calib: Optional[TextLike] = None,
    act_sym: bool = False,
    act_percentile: Optional[float] = None,
    imatrix: bool = False,
    imatrix_file: Optional[Union[str, "os.PathLike[str]"]] = None,
    rounding: str = "block",
) -> Plan:
    """Every tensor in one ``format`` ("q4_k", "int8-sym-channel", ...), scored against
    the FP model and priced on ``target``, exactly as ``qevo quantize`` scores it (the
    library's ``eval::score_plan``; the keywords are its flags): on ``text`` (default: the
    embedded held-out split) in at most ``max_windows`` (64) windows of ``seq_len`` tokens
    (256, or the model's positions if fewer); activations below 16 bits with ranges
    calibrated on ``calib`` (default: the embedded calibration split), asymmetric unless
    ``act_sym``; GGML types rounded with an importance matrix (``imatrix=True`` collects
    one on ``calib``, ``imatrix_file`` reads one) and ``rounding`` "block" or "output".
    ``plan.export("model.gguf")`` writes it."""
    options = {
        "text": _text(text, "text"),
        "calib": _text(calib, "calib"),
        "seq_len": seq_len,
        "max_windows": max_windows,
        "act_sym": act_sym,
        "act_percentile": act_percentile,
        "imatrix": imatrix,
        "imatrix_file": None if imatrix_file is None else os.fspath(imatrix_file),
        "rounding": rounding,
    }
    options = {k: v for k, v in options.items() if v is not None}
    record = _qevo.quantize(model, format, act_bits, target, json.dumps(options))
    return Plan(model, json.loads(record))
