"""Independent fits run side by side, each cost-model evaluation they ask for priced in one call with the others'.

A forward-selection round fits every candidate parameter on every inner fold: tens of independent least-squares
fits of a few dozen rows each, where each step of a fit is one small cost-model call, almost all numpy's per-call
overhead (cost.efficiency_sweep). Run one after another they cost the sum of their steps; here each fit runs on a
thread of its own, blocked whenever it asks for step times, and the caller's thread prices every waiting request
together (`efficiency_sweep.step_times_of`: one call per numpy error state the fits asked in, in chunks below
`distinct.FEWEST_KEYED_ROWS`) once all the fits still running wait. A round then costs about as many cost-model calls
as its longest fit takes.

Each fit sees the numbers it would alone (the sweep is elementwise, tests/property/test_efficiency_sweep.py) and so
makes the same steps; the requests are priced in job order, whichever thread asks first. Only the caller's thread runs
the cost model; the fits' threads run scipy's optimizer between their requests, under the caller's numpy error state.
Where pricing a round's requests together fails, each is priced alone, so a fit raises only what its own rows raise.

Its own module because it is how several fits are scheduled, apart from what one fit does (calibrate.fitting) and
which fits the selection asks for (calibrate.selection).
"""

from __future__ import annotations

import threading

import numpy as np

from planner.cost.efficiency_sweep import step_times_of
from planner.specs.candidate_batch import CandidateBatch
from planner.specs.hardware import ClusterSpec


class _Pricer:
    """The requests of the fits still running: `ask` blocks a fit's thread until `serve`, on the caller's thread,
    has priced it together with every other running fit's request."""

    def __init__(self, batch: CandidateBatch, cluster: ClusterSpec, running: int):
        self.batch, self.cluster = batch, cluster
        self.running = running
        self.waiting: list[dict] = []
        self.closed: BaseException | None = None
        self.condition = threading.Condition()

    def asking_for(self, job: int):
        """Job `job`'s `ask(rows, settings)`: its requests are priced in job order, whichever thread asks first."""
        def ask(rows: np.ndarray, settings: list[dict]) -> np.ndarray:
            # The fit's numpy error state (its finiteness check runs under errstate(all="ignore")): its request is
            # priced under it, on the caller's thread.
            request = {"job": job, "rows": rows, "settings": settings, "errors": tuple(sorted(np.geterr().items()))}
            with self.condition:
                if self.closed is not None:
                    raise RuntimeError("calibration stopped") from self.closed
                self.waiting.append(request)
                self.condition.notify_all()
                while "times" not in request and "error" not in request:
                    self.condition.wait()
            if "error" in request:
                raise request["error"]
            return request["times"]

        return ask

    def done(self) -> None:
        with self.condition:
            self.running -= 1
            self.condition.notify_all()

    def serve(self) -> None:
        """Price the waiting requests whenever every running fit waits; return when none runs. Interrupted (Ctrl-C),
        it stops every fit: their waiting and later requests raise."""
        try:
            self._serve()
        except BaseException as error:
            with self.condition:
                self.closed = error
                for request in self.waiting:
                    request["error"] = RuntimeError("calibration stopped")
                self.waiting = []
                self.condition.notify_all()
            raise

    def _serve(self) -> None:
        while True:
            with self.condition:
                while self.running and len(self.waiting) < self.running:
                    self.condition.wait()
                if not self.running:
                    return
                requests, self.waiting = sorted(self.waiting, key=lambda r: r["job"]), []
            answers = {}
            for errors in dict.fromkeys(r["errors"] for r in requests):  # one call per error state asked in
                alike = [r for r in requests if r["errors"] == errors]
                answers.update(self._priced(alike, errors))
            with self.condition:
                for request in requests:
                    request.update(answers[id(request)])
                self.condition.notify_all()

    def _priced(self, requests: list[dict], errors: tuple) -> dict:
        """{id(request): {"times": ...} or {"error": ...}}: together, or where that fails each request alone, so a
        fit gets the error its own rows and settings raise, as it would alone, and no other fit's."""
        try:
            with np.errstate(**dict(errors)):
                times = step_times_of(self.batch, self.cluster, [(r["rows"], r["settings"]) for r in requests])
            return {id(r): {"times": t} for r, t in zip(requests, times)}
        except Exception as error:
            if len(requests) == 1:
                return {id(requests[0]): {"error": error}}
        answers = {}
        for request in requests:
            answers.update(self._priced([request], errors))
        return answers


def run_together(batch: CandidateBatch, cluster: ClusterSpec, jobs: list) -> list:
    """[job(price) for job in jobs], the jobs run side by side: each job is a callable taking `price(rows, settings)`
    (step times of `batch`'s `rows` under each setting, shape (len(settings), len(rows))) and returning its result.
    Each job runs under the caller's numpy error state. Raises the first job's exception, in job order, once every
    job has ended."""
    if not jobs:
        return []
    pricer = _Pricer(batch, cluster, len(jobs))
    results: list = [None] * len(jobs)
    errors: list = [None] * len(jobs)
    caller_errors = np.geterr()  # a new thread starts with numpy's default error state

    def run(i: int) -> None:
        try:
            with np.errstate(**caller_errors):
                results[i] = jobs[i](pricer.asking_for(i))
        except BaseException as error:  # re-raised on the caller's thread below
            errors[i] = error
        finally:
            pricer.done()

    threads = [threading.Thread(target=run, args=(i,), daemon=True, name=f"calibration-fit-{i}")
               for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    pricer.serve()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results
