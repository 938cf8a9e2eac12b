"""The `autoregress` command: submit a prompt to the service and print the notebook-style trace, live."""
