"""dubsim: a live video-translation job service (simulated)."""
