"""Learning from a team's own logs: training from few labels, weak labels, which turns to label, label sheets."""
