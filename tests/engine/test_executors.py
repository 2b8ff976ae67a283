import pytest

from assay.errors import InputError
from assay.parallel import InProcessExecutor, ProcessPoolExecutorAdapter, make_executor


def square_plus(item, shared):
    return item * item + shared


def test_local_and_process_pool_agree():
    items = list(range(6))
    assert InProcessExecutor().map(square_plus, items, 10) == [i * i + 10 for i in items]
    assert ProcessPoolExecutorAdapter(2).map(square_plus, items, 10) == [i * i + 10 for i in items]
    with pytest.raises(InputError, match="unknown executor"):
        make_executor("slurm")


def test_ray_executor_runs_tasks_on_a_local_cluster():
    pytest.importorskip("ray")
    import operator

    ex = make_executor("ray")
    try:  # work functions must be importable by the workers (assay's own are); pow(item, shared)
        assert ex.map(operator.pow, list(range(5)), 2) == [0, 1, 4, 9, 16]
    finally:
        ex.close()
