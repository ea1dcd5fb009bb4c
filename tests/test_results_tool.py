"""tools/results.py: the RCS-strength runs differ from the main TET + RCS run only in α."""

from tools import results


def test_alpha_runs_sorted_by_alpha_with_the_main_runs_at_zero_and_alpha_direct():
    assert results.alpha_runs(0.002) == [
        (0.0, "tet"),
        (0.001, "tet-rcs-a0.001"),
        (0.002, "tet-rcs"),
        (0.005, "tet-rcs-a0.005"),
    ]
    # a sweep α equal to --alpha-direct is the main run itself, not a second row
    assert results.alpha_runs(0.005) == [
        (0.0, "tet"),
        (0.001, "tet-rcs-a0.001"),
        (0.005, "tet-rcs"),
    ]


def test_sweep_configs_equal_the_main_tet_rcs_config_but_for_alpha_and_out_dir():
    args = results.parser().parse_args(["--alpha-direct", "0.003", "--runs", "somewhere"])
    main = results.run_config(args, "tet-rcs", 1).to_dict()
    assert main["alpha"] == 0.003
    assert results.run_config(args, "tet", 1).alpha == 0.0
    for name, alpha in results.ALPHA_RUNS.items():
        config = results.run_config(args, name, 1).to_dict()
        assert config["alpha"] == alpha
        assert config["out_dir"] == f"somewhere/{name}-s1"
        differs = {k for k in config if config[k] != main[k]}
        assert differs == {"alpha", "out_dir"}


def fake_report(steps_eps0: float, oct_steps: float) -> dict:
    return {
        "accuracy_T": 0.97,
        "oct": {"mean_steps": oct_steps},
        "topk": [
            {"epsilon": 0.0, "mean_steps": steps_eps0},
            {"epsilon": 0.01, "mean_steps": steps_eps0 / 2},
        ],
    }


def test_alpha_sentence_is_computed_from_the_runs_present():
    steps = {"tet": (6.0, 7.0), "tet-rcs-a0.001": (4.0, 4.5), "tet-rcs": (5.0, 6.0)}
    oct_steps = {"tet": (1.5, 1.7), "tet-rcs-a0.001": (1.4, 1.6), "tet-rcs": (1.5, 1.7)}
    reports = {
        name: {seed: fake_report(steps[name][seed], oct_steps[name][seed]) for seed in (0, 1)}
        for name in steps
    }
    sentence = results.alpha_sentence(reports, 0.002)  # no α = 0.005 runs: left out
    assert "α = 0 / 0.001 / 0.002)" in sentence
    assert "6.50 / 4.25 / 5.50 mean steps at ε = 0" in sentence
    assert "3.25 / 2.12 / 2.75 at ε = 0.01" in sentence
    assert "fewest steps come at α = 0.001, 2.25 below α = 0, more than" in sentence
    assert "do not fall monotonically" in sentence
    assert "OCT 1.60 / 1.50 / 1.60" in sentence
    assert "spans 0.10 steps across α, no more than the seeds' std (0.14, mean over α)" in sentence
    one_seed = {name: {0: by_seed[0]} for name, by_seed in reports.items()}
    assert "(one seed per α, no spread" in results.alpha_sentence(one_seed, 0.002)
