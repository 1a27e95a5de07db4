"""The Slurm backend: batch scripts and command lines built by pure functions
(`script`), and one runner for every shell-out (`runner`)."""

from fabbrica.backends.slurm.runner import (
    CommandNotFound,
    Completed,
    SlurmCommandError,
    SlurmError,
    SlurmRunner,
    SlurmTimeout,
    display,
)
from fabbrica.backends.slurm.script import (
    BatchJob,
    BatchJobError,
    ansi_c_quote,
    job_name,
    parse_sbatch_output,
    render,
    run_tag,
    sbatch_argv,
    scancel_argv,
    slurm_time,
)

__all__ = [
    "BatchJob",
    "BatchJobError",
    "CommandNotFound",
    "Completed",
    "SlurmCommandError",
    "SlurmError",
    "SlurmRunner",
    "SlurmTimeout",
    "ansi_c_quote",
    "display",
    "job_name",
    "parse_sbatch_output",
    "render",
    "run_tag",
    "sbatch_argv",
    "scancel_argv",
    "slurm_time",
]
