# One HTTP request on stdin, the answer on stdout. The body of the answer is thrown away by the proxy:
# only the fly-replay header counts.
#
# The customer comes from the X-Customer header, else from the first part of the path (/acme/...). The
# customer's app gets the request as it was sent (path included: the replay does not rewrite it).
read -r method target version
customer=''
# Read the headers up to the blank line; the customer's app sees them all again after the replay.
while read -r line; do
  line=$(printf '%s' "$line" | /bin/busybox tr -d '\r')
  [ -z "$line" ] && break
  name=$(printf '%s' "${line%%:*}" | /bin/busybox tr 'A-Z' 'a-z')
  if [ "$name" = x-customer ]; then
    customer=${line#*:}
    customer=${customer# }
  fi
done
if [ -z "$customer" ]; then
  path=${target#/}
  customer=${path%%/*}
  customer=${customer%%\?*}
fi
case "$customer" in
  '' | *[!a-z0-9-]*)
    printf 'HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n'
    printf 'name a customer: an X-Customer header, or /<customer>/...\n'
    ;;
  *)
    printf 'HTTP/1.1 307 Temporary Redirect\r\nfly-replay: app=%s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n' "$customer"
    ;;
esac
