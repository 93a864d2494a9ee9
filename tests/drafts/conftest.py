import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matmuls are dominated by thread synchronisation: on a busy 2-core machine one thread
    # runs these tests ~50× faster than two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
