# Makes what git cannot hold; runs in the build context.
ln -s a.txt l1.txt && cp a.txt l2.txt
