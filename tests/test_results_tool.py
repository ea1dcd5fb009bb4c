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
