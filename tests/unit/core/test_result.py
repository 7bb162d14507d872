import subprocess

from mechunlearn.core.result import git_dirty


def test_provenance_says_when_the_tree_is_modified(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    assert git_dirty(tmp_path) is False
    (tmp_path / "new.txt").write_text("untracked files do not count\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_dirty(tmp_path) is True
    assert git_dirty(tmp_path.parent / "not-a-repo-here") is None

