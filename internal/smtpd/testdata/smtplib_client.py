"""Send one message through relayguard with Python's smtplib.

usage: smtplib_client.py HOST PORT MODE MECH USER PASSWORD
MODE: starttls | ssl | plain
MECH: the SASL mechanism smtplib must use (PLAIN, LOGIN, CRAM-MD5)
Prints the queue id from the final reply; exits 1 on failure.
"""
import smtplib
import ssl
import sys

host, port, mode, mech, user, password = sys.argv[1:7]
port = int(port)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

if mode == "ssl":
    s = smtplib.SMTP_SSL(host, port, context=ctx, timeout=20)
else:
    s = smtplib.SMTP(host, port, timeout=20)
s.ehlo("python.example")
if mode == "starttls":
    s.starttls(context=ctx)
    s.ehlo("python.example")
# Force the mechanism under test.
s.user, s.password = user, password
authobject = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}[mech]
try:
    code, resp = s.auth(mech, authobject, initial_response_ok=(mech != "CRAM-MD5"))
except smtplib.SMTPAuthenticationError as e:
    print("AUTHFAIL %d %s" % (e.smtp_code, e.smtp_error.decode()))
    sys.exit(1)
s.mail("alice@mail.test")
code, resp = s.rcpt("someone@remote.example")
if code != 250:
    print("RCPT %d %s" % (code, resp.decode()))
    sys.exit(1)
code, resp = s.data(b"From: alice@mail.test\r\nTo: someone@remote.example\r\nSubject: smtplib " + mech.encode() + b"\r\n\r\nhello from smtplib\r\n")
print(resp.decode())
s.quit()
