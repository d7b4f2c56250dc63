"""The placement problem (units, payloads, a mesh) and its solvers: the baselines,
the CP-SAT search, and the lower bound the report compares against."""
