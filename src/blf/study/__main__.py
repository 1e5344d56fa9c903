import sys

from blf.study.driver import main

sys.exit(main())
