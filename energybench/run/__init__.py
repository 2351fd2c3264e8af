"""Where and in what order runs happen: suite → run specs → preflight → the grid → one run in its own process."""
