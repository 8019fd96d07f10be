"""A fleet: one artifact measured (profile) or gated (verify) on several boards at once.

Boards come from a repeated `--target URL` (each named by its URL) or a fleet file (YAML or JSON,
read as data only: no tags, no code):

    boards:                                  # or the list itself at the top level
      - name: pi-a                           # required, unique: letters, digits, . _ - (<= 64)
        target: ssh://pi@10.0.0.5            # required: local | ssh://[user@]host[:port] | adb[://SERIAL]
        python: /usr/bin/python3             # optional: --target-python for this board
        workdir: /tmp/edgecomp               # optional: --workdir for this board
        identity_file: keys/pi_ed25519       # optional: --identity-file (relative to the fleet file)
        ssh_options: [ConnectTimeout=5]      # optional: --ssh-option values for this board

The command line's target options are every board's defaults; a board's own keys override them (its
ssh_options come first, and ssh keeps the first value of an option). Two entries naming the same
board (same kind, host and port, or serial) are refused: a board runs one measurement at a time.

The host-side work (resolving the artifact, the inputs, the reference outputs) is done once, then
every board is measured in its own thread with the same artifact, inputs and settings. A board that
cannot run (unreachable, missing runtime) is recorded with its error; the others still finish.

Fleet exit code, first that applies:  1 any board FAILs  >  2 any board could not run  >
3 any board is INCONCLUSIVE  >  0. A failure is evidence that the artifact misses its budget
somewhere, so nothing hides it; a board with no result outranks a noisy one, because measuring
longer (the remedy for 3) cannot fix it. Aggregate: the board with the highest confidence upper
bound of the gated percentile (profile: --percentile, else the profile's) is the worst case.
"""

from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import yaml

from edgecomp.errors import EdgecompError, UserInputError
from edgecomp.exit_codes import ExitCode
from edgecomp.runtime.gates import FAIL, INCONCLUSIVE, PASS, verdict
from edgecomp.runtime.harness import TargetOptions, measure_prepared, prepare_measurement
from edgecomp.runtime.report import ProfileReport, VerifyResult, finite
from edgecomp.runtime.stats import percentile_stat
from edgecomp.runtime.transport import parse_target

FLEET_FORMAT = "edgecomp-fleet-report/1"  # the "format" tag of the fleet JSON document (edgecomp.formats style)
BOARD_KEYS = ("name", "target", "python", "workdir", "identity_file", "ssh_options")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ERROR, MEASURED = "ERROR", "MEASURED"
EXIT_PRECEDENCE = (ExitCode.BUDGET_EXCEEDED, ExitCode.COULD_NOT_RUN, ExitCode.INCONCLUSIVE)


@dataclass(frozen=True)
class Board:
    """One device of the fleet: a name for the reports, its target URL and how to reach it."""

    name: str
    target: str
    options: TargetOptions = field(default_factory=TargetOptions)

    @property
    def slug(self) -> str:
        """The name made safe and short for file and JUnit suite names (a URL's ?query is left out)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name.split("?")[0]).strip("_")[:64] or "board"


# ---- boards ---------------------------------------------------------------------------------

def boards_from_targets(targets: Sequence[str], options: TargetOptions | None = None) -> list[Board]:
    """One board per --target URL, named by the URL, all with the command line's target options."""
    options = options or TargetOptions()
    for url in targets:
        parse_target(url)  # a bad URL: its own one-line message
    boards = [Board(url.strip(), url.strip(), options) for url in targets]
    check_distinct(boards)
    return boards


def read_fleet_file(path: str | Path, defaults: TargetOptions | None = None) -> list[Board]:
    """The boards of a YAML/JSON fleet file (module docstring); UserInputError with one line if it is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{path}: fleet file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the fleet file: {exc}") from None
    return parse_fleet(_load(text, path), where=str(path), base_dir=path.parent, defaults=defaults)


def _load(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        except _DuplicateKey as exc:
            raise UserInputError(f"{path}: duplicate key {exc.args[0]!r}") from None
    try:
        return yaml.load(text, Loader=_FleetLoader)  # noqa: S506 - a SafeLoader subclass: data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise UserInputError(f"{path}: invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate is not None:
        raise _DuplicateKey(duplicate)
    return dict(pairs)


class _FleetLoader(yaml.SafeLoader):
    """SafeLoader (data only: no tags, no code) that refuses duplicate keys: a second `target:` must not win."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_fleet(data: Any, *, where: str = "fleet", base_dir: Path | None = None,
                defaults: TargetOptions | None = None) -> list[Board]:
    """Validate the loaded fleet document and build its boards (defaults: the command line's options)."""
    defaults = defaults or TargetOptions()
    entries = data.get("boards") if isinstance(data, dict) else data
    if isinstance(data, dict) and set(data) - {"boards"}:
        raise UserInputError(f"{where}: unknown top-level key(s) {sorted(map(str, set(data) - {'boards'}))}; "
                             "a fleet file has only `boards:`, a list of boards")
    if not isinstance(entries, list) or not entries:
        raise UserInputError(f"{where}: expected a non-empty list of boards (`boards:` with entries that have a name "
                             "and a target)")
    boards = [_board(entry, i, where, base_dir, defaults) for i, entry in enumerate(entries, 1)]
    names = [b.name for b in boards]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise UserInputError(f"{where}: two boards are named {duplicate!r}; board names must be unique")
    check_distinct(boards, where=where)
    return boards


def _board(entry: Any, index: int, where: str, base_dir: Path | None, defaults: TargetOptions) -> Board:
    what = f"{where}: board {index}"
    if not isinstance(entry, dict):
        raise UserInputError(f"{what}: expected a mapping with name and target, got {type(entry).__name__}")
    unknown = sorted(map(str, set(entry) - set(BOARD_KEYS)))
    if unknown:
        raise UserInputError(f"{what}: unknown key(s) {unknown}; a board has {', '.join(BOARD_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UserInputError(f"{what}: name must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or "
                             f"digit), got {name!r}")
    what = f"{where}: board {name!r}"
    for key in ("target", "python", "workdir", "identity_file"):
        value = entry.get(key)
        if (key == "target" or value is not None) and not (isinstance(value, str) and value.strip()):
            raise UserInputError(f"{what}: {key} must be a non-empty string, got {value!r}")
    try:
        parse_target(entry["target"])
    except UserInputError as exc:
        raise UserInputError(f"{what}: {exc}") from None
    ssh_options = entry.get("ssh_options") or []
    if not (isinstance(ssh_options, list) and all(isinstance(o, str) and "=" in o for o in ssh_options)):
        raise UserInputError(f"{what}: ssh_options must be a list of KEY=VALUE strings (each passed as ssh -o), "
                             f"got {ssh_options!r}")
    identity = entry.get("identity_file")
    if identity is not None:
        identity_path = Path(identity).expanduser()
        if not identity_path.is_absolute() and base_dir is not None:
            identity_path = base_dir / identity_path
        identity = str(identity_path)
    options = replace(
        defaults,
        python=entry.get("python") or defaults.python,
        workdir=entry.get("workdir") or defaults.workdir,
        identity_file=identity or defaults.identity_file,
        ssh_options=(*(x for opt in ssh_options for x in ("-o", opt)), *defaults.ssh_options),
    )
    return Board(name, entry["target"].strip(), options)


def check_distinct(boards: Sequence[Board], *, where: str = "--target") -> None:
    """Refuse two entries for one device: its measurements would run at once and time each other."""
    seen: dict[tuple, str] = {}
    for board in boards:
        t = parse_target(board.target)
        key = (t.kind, t.host, t.port or (22 if t.kind == "ssh" else None), t.serial)
        if key in seen:
            raise UserInputError(f"{where}: {seen[key]!r} and {board.name!r} are the same board ({board.target}); "
                                 "list each board once (a board runs one measurement at a time)")
        seen[key] = board.name


# ---- results --------------------------------------------------------------------------------

@dataclass
class BoardResult:
    """One board's outcome: a VerifyResult (verify), a ProfileReport (profile), or the error that stopped it."""

    board: Board
    result: VerifyResult | ProfileReport | None = None
    error: str | None = None

    @property
    def report(self) -> ProfileReport | None:
        return self.result.report if isinstance(self.result, VerifyResult) else self.result

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return int(ExitCode.COULD_NOT_RUN)
        return self.result.exit_code if isinstance(self.result, VerifyResult) else int(ExitCode.OK)

    @property
    def verdict(self) -> str:
        """PASS / FAIL / INCONCLUSIVE (verify), MEASURED (profile), or ERROR (could not run)."""
        if self.error is not None:
            return ERROR
        return self.result.verdict if isinstance(self.result, VerifyResult) else MEASURED

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.board.name, "target": self.board.target, "verdict": self.verdict,
                               "exit_code": self.exit_code}
        if self.error is not None:
            doc["error"] = self.error
        else:
            doc["result"] = self.result.to_dict()
        return doc


def fleet_exit_code(codes: Iterable[int]) -> int:
    """The fleet's exit code from its boards': 1 > 2 > 3 > 0 (module docstring says why)."""
    present = {int(c) for c in codes}
    return next((int(c) for c in EXIT_PRECEDENCE if int(c) in present), int(ExitCode.OK))


@dataclass
class FleetResult:
    """Every board's result (in the order given) and the aggregate a fleet gate decides on."""

    command: str                 # "verify" | "profile"
    device: str
    percentile: float            # the percentile the aggregate's worst case is taken at
    boards: list[BoardResult]

    @property
    def exit_code(self) -> int:
        return fleet_exit_code(b.exit_code for b in self.boards)

    @property
    def verdict(self) -> str:
        if self.command == "profile":
            return ERROR if self.exit_code else MEASURED
        return verdict(self.exit_code)

    def aggregate(self) -> dict[str, Any]:
        verdicts = [b.verdict for b in self.boards]
        return {
            "boards": len(self.boards),
            "verdicts": {b.board.name: b.verdict for b in self.boards},
            "passed": verdicts.count(PASS),
            "failed": verdicts.count(FAIL),
            "inconclusive": verdicts.count(INCONCLUSIVE),
            "could_not_run": verdicts.count(ERROR),
            "measured": sum(b.report is not None for b in self.boards),
            "worst_latency": worst_latency(self.boards, self.percentile),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"format": FLEET_FORMAT, "command": self.command, "device": self.device, "verdict": self.verdict,
                "exit_code": self.exit_code, "aggregate": finite(self.aggregate()),
                "boards": [b.to_dict() for b in self.boards]}


def board_latency(result: BoardResult, percentile: float) -> dict[str, Any] | None:
    """The board's latency at `percentile`: the gate's (possibly widened) bounds when a latency gate ran,
    else the order-statistic bounds of its samples. None for a board without a measurement."""
    report = result.report
    if report is None:
        return None
    if isinstance(result.result, VerifyResult):
        gate = next((g for g in result.result.gates if g.name.startswith("latency") and g.threshold is not None), None)
        if gate is not None:
            d = gate.details
            return {"board": result.board.name, "percentile": d["percentile"], "estimate_ms": d["estimate_ms"],
                    "lower_bound_ms": d["lower_bound_ms"], "upper_bound_ms": d["upper_bound_ms"],
                    "confidence": d["confidence"], "budget_ms": gate.threshold, "status": gate.status}
    confidence = report.settings.get("confidence") or 0.99
    try:
        ps = report.latency.percentile(percentile)
    except KeyError:
        ps = percentile_stat(np.sort(np.asarray(report.latency.samples_ms, dtype=np.float64)), percentile,
                             confidence=confidence)
    return {"board": result.board.name, "percentile": float(percentile), "estimate_ms": ps.value,
            "lower_bound_ms": ps.lower_bound, "upper_bound_ms": ps.upper_bound, "confidence": ps.confidence,
            "budget_ms": None, "status": None}


def worst_latency(boards: Sequence[BoardResult], percentile: float) -> dict[str, Any] | None:
    """The board whose upper confidence bound (then estimate) of the percentile is highest: the fleet's
    worst case. An unbounded upper bound (too few samples) counts as the highest."""
    rows = [row for row in (board_latency(b, percentile) for b in boards) if row is not None]
    if not rows:
        return None
    return max(rows, key=lambda r: (_or_inf(r["upper_bound_ms"]), r["estimate_ms"]))


def _or_inf(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value


# ---- running --------------------------------------------------------------------------------

def run_on_boards(boards: Sequence[Board], work: Callable[[Board], Any]) -> list[BoardResult]:
    """work(board) for every board at once, one thread each (so one measurement at a time per board).
    An EdgecompError stops only its board; any other exception is a bug and is raised once all finish."""
    if not boards:
        raise UserInputError("a fleet needs at least one board")
    with ThreadPoolExecutor(max_workers=len(boards), thread_name_prefix="edgecomp-board") as pool:
        futures = [pool.submit(work, board) for board in boards]
    results: list[BoardResult] = []
    for board, future in zip(boards, futures):
        exc = future.exception()
        if exc is None:
            results.append(BoardResult(board, result=future.result()))
        elif isinstance(exc, EdgecompError):
            results.append(BoardResult(board, error=str(exc)))
        else:
            raise exc
    return results


def verify_fleet(artifact_path: str | Path, profile, boards: Sequence[Board], **verify_options: Any) -> FleetResult:
    """runtime.verify on every board: prepared once on the host, measured in parallel, gated per board.
    `verify_options` are verify()'s keywords except target and target_options (each board has its own)."""
    from edgecomp.runtime.verification import gate, prepare_verify

    plan, prepared = prepare_verify(artifact_path, profile, **verify_options)
    results = run_on_boards(boards, lambda b: gate(plan, measure_prepared(prepared, target=b.target,
                                                                          target_options=b.options)))
    return FleetResult("verify", profile.name, plan.percentile, results)


def profile_fleet(artifact_path: str | Path, profile, boards: Sequence[Board], **profile_options: Any) -> FleetResult:
    """runtime.profile_artifact on every board, in parallel (keywords as profile_artifact's, less the target's)."""
    prepared = prepare_measurement(artifact_path, profile, **profile_options)
    results = run_on_boards(boards, lambda b: measure_prepared(prepared, target=b.target,
                                                               target_options=b.options).report)
    pct = prepared.percentile if prepared.percentile is not None else (profile.latency_percentile or 90.0)
    return FleetResult("profile", profile.name, float(pct), results)
