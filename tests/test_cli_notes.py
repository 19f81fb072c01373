"""``pipedrive-channels backfill --target notes``: its options, the dry run's two estimates, a run and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import wire_message

from pipedrive_channels import cli as cli_module


def write_export(path: Path, count: int, *, conversations: int = 4) -> Path:
    """``count`` messages over ``conversations`` conversations, each one's first record naming its customer."""
    with path.open("w", encoding="utf-8") as file:
        for index in range(count):
            line = wire_message(index, conversations=conversations)
            if index < conversations:
                line["contact"] = ({"phone": f"+1555000{index:04d}", "name": f"Customer {index}"} if index % 2 == 0
                                   else {"email": f"customer-{index}@example.com"})
            file.write(json.dumps(line) + "\n")
    return path


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--group-by", "day"], "--group-by goes with --target notes"),
        (["--target", "channels", "--no-create-persons"], "--no-create-persons goes with --target notes"),
        (["--target", "notes", "--channel", "wa=WhatsApp"], "does not go with --target notes"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_options_that_do_not_go_with_the_target_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, flags: list[str], said: str,
    dry_run: bool,
) -> None:
    monkeypatch.setenv("PIPEDRIVE_ACCESS_TOKEN", "token")
    path = write_export(tmp_path / "export.jsonl", 4)
    mode = ["--dry-run"] if dry_run else ["--checkpoint", str(tmp_path / "journal.sqlite")]
    assert cli_module.run(["backfill", str(path), *mode, *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and said in captured.err, captured.err
    assert not (tmp_path / "journal.sqlite").exists()


def test_an_unknown_target_or_grouping_is_refused_by_argparse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_export(tmp_path / "export.jsonl", 4)
    for flags in (["--target", "activities"], ["--target", "notes", "--group-by", "week"]):
        with pytest.raises(SystemExit) as exited:
            cli_module.run(["backfill", str(path), "--dry-run", *flags])
        assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
