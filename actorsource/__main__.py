"""python -m actorsource: the command line."""

from .cli import main

main()
