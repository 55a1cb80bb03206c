"""The staging transaction of a run: its new files are written into a
temporary directory inside the run directory and moved into place together
on commit, so a run that fails before then leaves an existing run's files
as they were."""
import os
import shutil
import tempfile


class Staging:
    """A staging directory inside `directory`; `commit` or `discard` ends it."""

    def __init__(self, directory):
        self.directory = directory
        self.path = tempfile.mkdtemp(prefix=".staging-", dir=directory)

    def file(self, final_path):
        """Where the staged copy of `final_path` (a file of the run directory) is written."""
        return os.path.join(self.path, os.path.basename(final_path))

    def commit(self):
        """Move every staged file into the run directory (sorted by name)."""
        for name in sorted(os.listdir(self.path)):
            os.replace(os.path.join(self.path, name), os.path.join(self.directory, name))
        os.rmdir(self.path)

    def discard(self):
        """Drop the staged files (the run directory keeps what it had)."""
        shutil.rmtree(self.path, ignore_errors=True)
