# Makes what git cannot hold; runs in the build context.
ln -s f.txt dir/rel && ln -s /etc/passwd dir/abs && ln -s missing dir/dangling && mkdir dir/sub && ln -s ../f.txt dir/sub/up
