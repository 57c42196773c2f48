import sys

from pyproxy.cli.main import main

sys.exit(main())
