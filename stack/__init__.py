"""Running the whole service on one machine: the embedded Redis server and the process launcher."""
