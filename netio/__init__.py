"""netio: the one home for Caffe's files and nets -- reading prototxt,
caffemodel and solverstate files with the checks that keep Caffe from
aborting, building a net from a NetParameter and loading weights into it,
saving weights atomically, and net geometry read from a NetParameter.
It imports only `common` and `caffe`."""
