v = 19
e = 2
a = v - 3
u = 10
y = a - 7
r = y + 4
l = r + 3
print(l)
