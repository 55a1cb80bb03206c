"""One part of bench.gpu_check: its time budget, its rows, and its results
file (a human-readable table, notes, then one `json: {...}` line)."""
import json
import os
import time

from common.atomic import atomic_write

from . import common


class Budget:
    """Seconds a part may take; children get what is left as their timeout."""

    def __init__(self, seconds):
        self.seconds, self.start = float(seconds), time.monotonic()

    def left(self):
        return self.seconds - (time.monotonic() - self.start)

    def spent(self):
        return time.monotonic() - self.start


class Part:
    """The outcome of one part: rows shown as a table with `columns`, notes,
    raw data for the json line, and whether it failed or was cut short."""

    def __init__(self, name, title, columns, budget_s):
        self.name, self.title, self.columns = name, title, columns
        self.budget = Budget(budget_s)
        self.rows, self.notes, self.data = [], [], {}
        self.failed = self.cut_short = False

    def add(self, row, failed=False):
        self.rows.append(row)
        self.failed |= failed
        return row

    def needs_gpu(self, row, why):
        """A row for a measurement this machine cannot make."""
        return self.add(dict(row, status=f"needs a GPU: {why}"), failed=True)

    def out_of_time(self, row):
        """A row not measured because the part's budget was spent."""
        self.cut_short = True
        return self.add(dict(row, status=f"not run: the part's budget of {self.budget.seconds:.0f} s "
                                         f"was spent"), failed=True)

    def has_time(self, at_least=1.0):
        return self.budget.left() >= at_least

    def text(self):
        lines = [f"## {self.title}", ""]
        if self.rows:
            lines += [common.markdown(self.rows, self.columns), ""]
        if self.cut_short:
            lines.append(f"CUT SHORT: this part stopped at its time budget of "
                         f"{self.budget.seconds:.0f} s; its rows show what it measured "
                         "(`not run`: what it did not reach).")
        lines += self.notes
        lines.append(f"({self.name}: {self.budget.spent():.0f} s of a {self.budget.seconds:.0f} s "
                     f"budget; {'FAILED or incomplete' if self.failed else 'ok'})")
        record = dict(part=self.name, failed=self.failed, cut_short=self.cut_short,
                      seconds=round(self.budget.spent(), 1), budget_s=self.budget.seconds,
                      rows=self.rows, **self.data)
        lines += ["", "json: " + json.dumps(record, default=str)]
        return "\n".join(lines) + "\n"

    def write(self, results_dir):
        """DIR/<part>.txt (written to a temporary name, then renamed)."""
        path = os.path.join(results_dir, f"{self.name}.txt")
        atomic_write(path, self.text())
        return path
