import sys

from blf.report.collect import main

sys.exit(main())
