"""--optuna-journal: a search read back by Optuna itself."""

import pytest

import qevo

optuna = pytest.importorskip("optuna")


def test_optuna_loads_the_journal_and_plots_it(model, small, tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "study.log"
    r = qevo.search(model, optuna_journal=path, max_size_mb=3.0, **small)
    storage = JournalStorage(JournalFileBackend(str(path)))
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.metric_names == ["kl", "size_bytes", "latency_ms", "energy_mj"]
    evaluations = r.evaluations
    assert len(study.trials) == len(evaluations) > 0
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(complete) + len(pruned) == len(study.trials)
    for t, e in zip(study.trials, evaluations):
        assert t.user_attrs["kl"] == e["scored"]["metrics"]["kl"]
        assert set(t.params) == {"embedding", "attn_q", "attn_k", "attn_v", "attn_out", "ffn_gate", "ffn_up", "ffn_down", "output"}
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.values[1] == e["scored"]["size_bytes"]
    # Every plan on qevo's front was scored by the evolution: each is a complete trial.
    scored = {(t.values[0], t.values[1]) for t in complete}
    assert all((p.kl, p.size_bytes) in scored for p in r.front)
    assert study.best_trials
    assert study.trials[0].system_attrs["constraints"] == [evaluations[0]["scored"]["violation"]]
    pytest.importorskip("plotly")
    import optuna.visualization as vis

    fig = vis.plot_pareto_front(study, targets=lambda t: (t.values[0], t.values[1]), target_names=["KL", "bytes"])
    assert sum(len(d.x) for d in fig.data) == len(complete)
    fig = vis.plot_hypervolume_history(study, reference_point=[10.0, 1e8, 1e3, 1e3])
    ys = list(fig.data[0].y)
    assert len(ys) == len(complete) and ys[-1] > 0 and ys == sorted(ys)
