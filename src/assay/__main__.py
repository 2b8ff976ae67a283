from assay.cli import main
import sys
sys.exit(main())
