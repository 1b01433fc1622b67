"""`python -m services.cli …`, the command line's former home, for callers that still start it so (bench/).

The command line is consumers/cli.py (`onevoice`, `python -m consumers.cli`): it runs the service
loop of consumers/, on which services/ does not depend. This launcher only hands over; move
its callers to `python -m consumers.cli` and delete it (the one import of consumers/ left in services/).
"""

if __name__ == "__main__":
    from consumers.cli import app

    app()
