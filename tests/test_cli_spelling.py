"""One spelling across every command: ``--out`` for what a command writes, ``--steps`` for every
trainer's step count; the old spellings (``--max-steps``, ``bandit figures DIR``) still work, with a
one-line note.  The walk covers every leaf command of the real parser, so a new command is checked too."""
from __future__ import annotations

import argparse


from prefmatch.cli import build_parser, main

#: spellings of "the output" and "the step count" that the CLI does not show (one name each)
OTHER_OUT = {"--output", "--output-dir", "--outdir", "--out-dir", "--save-dir", "--dest"}
OTHER_STEPS = {"--max-steps", "--num-steps", "--n-steps", "--iterations", "--iters", "--total-steps"}


def leaf_commands(parser=None, path=()):
    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
        return
    for name, child in subs[0].choices.items():
        yield from leaf_commands(child, (*path, name))


def visible(parser):
    return [a for a in parser._actions if a.help != argparse.SUPPRESS]


def test_every_leaf_command_spells_out_and_steps_one_way():
    leaves = dict(leaf_commands())
    assert {"train sft", "train rm", "train ppo", "train dpo", "bandit figures", "model init", "data synth",
            "opinion", "verify", "solve", "eval"} <= set(leaves), sorted(leaves)
    bad = []
    for name, p in leaves.items():
        opts = {o for a in visible(p) for o in a.option_strings}
        bad += [f"{name}: {o}" for o in sorted(opts & (OTHER_OUT | OTHER_STEPS))]
        # a positional that names an output folder or file (the old `bandit figures DIR`)
        bad += [f"{name}: positional {a.dest}" for a in visible(p) if not a.option_strings
                and ("out" in a.dest or any(w in (a.help or "").lower() for w in ("output", "write")))]
        # a command that writes (it can refuse to replace what is there) takes --out
        if "--overwrite" in opts and "--out" not in opts and "--plot" not in opts:  # bandit run writes --plot
            bad.append(f"{name}: writes (has --overwrite) but has no --out")
        if name.startswith("train ") and "--steps" not in opts:
            bad.append(f"{name}: no --steps")
    assert not bad, "\n".join(bad)
    assert "--out" in {o for a in visible(leaves["bandit figures"]) for o in a.option_strings}


def test_old_max_steps_is_the_same_field_with_a_note(capsys):
    from prefmatch.llm.cli import _stage_config

    for stage in ("sft", "rm"):
        for flag in ("--max-steps", "--max_steps"):
            args = build_parser().parse_args(["train", stage, "--model", "m", "--data", "d", flag, "3"])
            assert _stage_config(stage, args).steps == 3
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "max_steps is the old name of steps" in err, err
        args = build_parser().parse_args(["train", stage, "--model", "m", "--data", "d", "--steps", "4"])
        assert _stage_config(stage, args).steps == 4
        assert capsys.readouterr().err == ""


def test_old_positional_figures_folder_is_accepted_with_a_note(tmp_path, monkeypatch, capsys):
    import prefmatch.tabular.cli as tcli

    written = []
    monkeypatch.setattr(tcli, "make_all_figures", lambda d: written.append(d) or [])
    assert main(["bandit", "figures", str(tmp_path / "a")]) == 0
    assert written == [str(tmp_path / "a")] and "use --out" in capsys.readouterr().err
    assert main(["bandit", "figures", "--out", str(tmp_path / "b")]) == 0
    assert written[-1] == str(tmp_path / "b") and capsys.readouterr().err == ""
    assert main(["bandit", "figures", "--out", str(tmp_path / "b"), str(tmp_path / "c")]) == 2
    assert "give the folder once" in capsys.readouterr().err
    assert main(["bandit", "figures"]) == 2
    assert "--out: required" in capsys.readouterr().err
