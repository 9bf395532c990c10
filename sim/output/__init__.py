"""Pictures of runs, sweeps and plans: the only matplotlib user. (A run's files are written by
`sim.studies.run.Result.save`.)"""
