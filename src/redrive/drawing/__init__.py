"""Drawing shared by redrive's HTML reports (the lab, chaos): the self-contained page and
its SVG charts. Pure string building, no dependencies, no script."""
