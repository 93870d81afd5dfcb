# Makes what git cannot hold; runs in the build context.
ln -s a.txt link.txt
