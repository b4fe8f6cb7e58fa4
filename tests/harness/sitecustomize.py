"""Test harness, loaded by a training subprocess whose PYTHONPATH starts with this folder (see
`tests/conftest.kill_in_save_env`): SIGKILL the process while it writes checkpoint N, after its model is
saved and before its train state is, to prove that a run killed mid-save resumes exactly."""

import os

_STEP = os.environ.get("CEREBRAS_GPT_TEST_KILL_IN_SAVE")
if _STEP:
    import signal

    from cerebras_gpt.train import checkpoint

    _write = checkpoint._write_train_state

    def _write_or_die(state, path):
        if str(state.get("step")) == _STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        _write(state, path)

    checkpoint._write_train_state = _write_or_die
