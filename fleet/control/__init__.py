"""The controller service: fleet state, dispatch, acknowledgements, re-planning."""
