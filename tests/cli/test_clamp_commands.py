"""`cogsae clamp`: generation with an edit, and the checks of what was asked."""

from __future__ import annotations

from click.testing import CliRunner

from cogsae.cli import main


def test_clamp_generates_with_and_without(tiny_flags: list[str]) -> None:
    args = ["clamp", *tiny_flags, "--max-new-tokens", "4", "--prompt", "The team"]
    result = CliRunner().invoke(main, [*args, "--feature", "5=40", "--steer", "unit:3=0.5x"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith("  without: ")
    assert lines[2].startswith("  with feature 5=40, steer unit:3=0.5x: ")


def test_clamp_refuses_what_it_cannot_do(tiny_flags: list[str]) -> None:
    run = CliRunner().invoke
    neither = run(main, ["clamp", *tiny_flags, "--feature", "5=1"])
    assert neither.exit_code == 2 and "give --prompt" in neither.output
    valueless = run(main, ["clamp", *tiny_flags, "--prompt", "x", "--feature", "5"])
    assert valueless.exit_code == 2 and "needs N=VALUE" in valueless.output
    bad = run(main, ["clamp", *tiny_flags, "--prompt", "x", "--steer", "unit:a=1"])
    assert bad.exit_code == 2 and "[--steer]" in bad.output
