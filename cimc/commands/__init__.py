"""One module per `cimc` sub-command, each with `register(subparsers)`."""
