"""Simulation: simulated vehicle control units, van kinematics and energy, the fleet simulator."""
