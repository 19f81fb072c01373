"""``pipedrive-channels backfill --target notes``: its options, the dry run's two estimates, a run and its report."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from factories import wire_message

from pipedrive_channels import cli as cli_module
from pipedrive_channels.testing import FakePipedrive


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


TOKEN = "notes-cli-SECRET-token"


async def _run(*args: str, fake: FakePipedrive) -> tuple[int, str, str]:
    fake.add_access_token(TOKEN)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPEDRIVE_")}
    env.update(PIPEDRIVE_BASE_URL=fake.base_url, PIPEDRIVE_ACCESS_TOKEN=TOKEN)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipedrive_channels", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None and TOKEN not in out.decode() + err.decode()
    return process.returncode, out.decode(), err.decode()


async def test_backfill_target_notes_end_to_end_reports_persons_notes_and_tokens(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    path = write_export(tmp_path / "export.jsonl", 40)
    fake.add_person("Customer 0", phones=["+15550000000"])  # conversation c-0 exists; the others are created
    args = ("backfill", str(path), "--checkpoint", str(tmp_path / "journal.sqlite"), "--target", "notes",
            "--group-by", "conversation", "--plan", "unlimited", "--quiet")
    code, out, err = await _run(*args, fake=fake)
    assert code == 0, err
    assert "delivered 40, skipped 0 (already in the checkpoint), failed 0" in out
    assert "persons: 1 found, 3 created, 0 failed; notes: 4 created, 0 updated" in out
    spent = fake.tokens_spent
    assert f"{spent:,} tokens" in out  # the budget charged what the server counted
    assert len(fake.notes) == 4 and len(fake.persons) == 4
    assert not [r for r in fake.requests if r.path.endswith("/channels/messages/receive")]

    code, out, err = await _run(*args, "--json", fake=fake)  # again: everything is in the checkpoint
    assert code == 0, err
    report = json.loads(out)
    assert (report["delivered"], report["skipped"]) == (0, 40) and fake.tokens_spent == spent
    assert report["counts"] == {"persons_found": 0, "persons_created": 0, "persons_failed": 0,
                                "notes_created": 0, "notes_updated": 0}


async def test_a_journal_grouped_otherwise_is_refused_with_the_reason(fake: FakePipedrive, tmp_path: Path) -> None:
    path = write_export(tmp_path / "export.jsonl", 8)
    journal = str(tmp_path / "journal.sqlite")
    base = ("backfill", str(path), "--checkpoint", journal, "--target", "notes", "--plan", "unlimited", "--quiet")
    assert (await _run(*base, fake=fake))[0] == 0
    code, _, err = await _run(*base, "--group-by", "conversation", fake=fake)
    assert code == 2 and err.count("\n") == 1 and "grouped by 'day'" in err and "Traceback" not in err, err
