"""Run, export and sweep directories: their file names, atomic writes, what peftkit may delete, saving a run, loading
it again (eval, predict), model cards and the runs table."""
